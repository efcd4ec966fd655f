"""``smx xent`` on language-model logits, end to end; softmax/compare-stability on safetensors.

Expected losses come from PyTorch (F.cross_entropy on logits[:, :-1] and
ids[:, 1:], as Hugging Face computes a causal LM's loss).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.io import safetensors as st

try:
    import torch
except ImportError:  # the agreement tests skip without torch, but CI (CI=true) requires it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("torch is not installed", allow_module_level=True)
F = torch.nn.functional

LM_LOGITS = os.path.join(SAMPLES, "lm_logits.safetensors")
LM_IDS = os.path.join(SAMPLES, "lm_ids.safetensors")
LM_VOCAB = os.path.join(SAMPLES, "lm_vocab.txt")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args):
    r = run(*args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def fails(*args, code=1):
    r = run(*args)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def _torch_lm_loss(x, ids, pad=None):
    labels = torch.tensor(ids[:, 1:]).clone()
    if pad is not None:
        labels[labels == pad] = -100
    xt = torch.tensor(np.asarray(x[:, :-1], dtype=np.float64))
    return F.cross_entropy(xt.reshape(-1, x.shape[-1]), labels.reshape(-1)).item()


def test_the_sample_run_matches_torch_and_shows_words():
    x = st.load(LM_LOGITS)
    ids = st.load(LM_IDS)
    ref = _torch_lm_loss(x, ids)
    r = ok("xent", LM_LOGITS, "--labels", LM_IDS, "--vocab", LM_VOCAB, "--shift-labels")
    out = r.stdout
    assert "corpus perplexity" in out and "not the mean of the 6 sequences' perplexities" in out
    assert "worst 10 tokens" in out and "'Z'" in out  # characters, not ids
    assert f"{ref:.9f}"[:11] in out
    doc = json.loads(ok("xent", LM_LOGITS, "--labels", LM_IDS, "--vocab", LM_VOCAB,
                        "--shift-labels", "--format", "json").stdout)
    assert doc["loss"] == pytest.approx(ref, rel=1e-14)
    assert doc["corpus"]["perplexity"] == pytest.approx(np.exp(ref), rel=1e-13)
    assert doc["corpus"]["tokens"] == 6 * 47
    assert doc["worst_tokens"][0]["true"] == "Z" and isinstance(doc["worst_tokens"][0]["true_id"], int)
    assert len(doc["per_token"]) == 6 * 47  # the shifted-out last positions are not rows
    assert doc["true_tokens"][:3] == ["h", "e", " "]  # "The ": after 'T' come 'h', 'e', ' '


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_bf16_batch_with_padding_streamed_in_blocks(tmp_path, dtype, monkeypatch):
    from smx_cli.cli import xent_lm
    monkeypatch.setattr(xent_lm, "_STREAM_BLOCK", 7 * 50 * 2)  # many small blocks
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 10, 50, generator=g) * 4).to(dtype)
    ids = torch.randint(1, 50, (3, 10), generator=g)
    ids[1, 6:] = 0
    from safetensors.torch import save_file
    save_file({"logits": x}, str(tmp_path / "x.safetensors"))
    save_file({"input_ids": ids, "attention_mask": torch.ones(3, 10)}, str(tmp_path / "y.safetensors"))
    doc = json.loads(ok("xent", tmp_path / "x.safetensors", "--labels", tmp_path / "y.safetensors",
                        "--shift-labels", "--pad-id", 0, "--format", "json").stdout)
    ref = _torch_lm_loss(x.float().numpy(), ids.numpy(), pad=0)
    assert doc["loss"] == pytest.approx(ref, rel=1e-13)
    assert [s["tokens"] for s in doc["sequences"]] == [9, 5, 9]


def test_torch_layout_with_class_axis_1(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 3, 4))  # (N, C, d1, d2)
    y = rng.integers(0, 5, size=(2, 3, 4))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ref = F.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="sum").item()
    doc = json.loads(ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                        "--class-axis", 1, "--reduction", "sum", "--format", "json").stdout)
    assert doc["loss"] == pytest.approx(ref, rel=1e-13)
    # the last axis by default: (2, 5, 3) positions of 4 classes need (2, 5, 3) labels
    msg = fails("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert "labels have shape (2, 3, 4)" in msg and "shape (2, 5, 3)" in msg


def test_npy_3d_streamed_equals_whole(tmp_path, monkeypatch):
    from smx_cli.cli import xent_lm
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 9, 13)).astype(np.float32)
    ids = rng.integers(0, 13, size=(4, 9))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", ids)
    whole = ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--shift-labels",
               "--format", "json").stdout
    monkeypatch.setattr(xent_lm, "_STREAM_BLOCK", 13 * 4 * 5)
    blocks = ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--shift-labels",
                "--format", "json").stdout
    assert json.loads(whole) == json.loads(blocks)
    assert json.loads(whole)["loss"] == pytest.approx(_torch_lm_loss(x, ids), rel=1e-13)


def test_tokenizer_json_vocab(tmp_path):
    tok = {"model": {"type": "BPE", "vocab": {ch: i for i, ch in enumerate(
        open(LM_VOCAB, encoding="utf-8").read().split("\n")[:-1])}}}
    tok["model"]["vocab"]["\n"] = tok["model"]["vocab"].pop("\\n")
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    out = ok("xent", LM_LOGITS, "--labels", LM_IDS, "--vocab", tmp_path / "tokenizer.json",
             "--shift-labels").stdout
    assert "'Z'" in out and "'\\n'" in out


@pytest.mark.parametrize("content,match", [
    (b"", "the vocabulary is empty"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"model": {"vocab": {"a": -1}}}', r"model.vocab\['a'\] = -1 is not a token id"),
    (b'{"model": {"vocab": {"a": 1e30}}}', r"model.vocab\['a'\] = 1e\+30 is not a token id"),
    (b'{"model": {"vocab": {"a": 100000000}}}', r"= 100000000 is not a token id \(an integer in "
                                                 r"\[0, 1e\+07\)\)"),
    pytest.param(b'{"model": ' + b"[" * 100000, "nested too deeply|not valid JSON", id="deep"),
    (b'{"model": {}}', "no model.vocab map"),
    (b'{"model": {"vocab": [1, 2]}}', "not of \\[token, score\\] pairs"),
    (b'{"model": ', "line 1, column 11: not valid JSON"),
])
def test_hostile_vocab(tmp_path, content, match):
    (tmp_path / "v").write_bytes(content)
    msg = fails("xent", LM_LOGITS, "--labels", LM_IDS, "--vocab", tmp_path / "v", "--shift-labels")
    assert str(tmp_path / "v") in msg
    import re
    assert re.search(match, msg), msg


def test_hostile_labels_and_options(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(288, dtype=np.int64))
    msg = fails("xent", LM_LOGITS, "--labels", tmp_path / "flat.npy", "--shift-labels")
    assert "labels have shape (288,)" in msg and "(6, 48)" in msg
    np.save(tmp_path / "frac.npy", np.full((6, 48), 1.5))
    assert "not an integer" in fails("xent", LM_LOGITS, "--labels", tmp_path / "frac.npy",
                                     "--shift-labels")
    big = np.zeros((6, 48), dtype=np.int64)
    big[2, 7] = 96
    np.save(tmp_path / "big.npy", big)
    # the position in the ids file, not in the shifted labels
    assert "token id at (2, 7) is 96, outside [0, 96)" in fails(
        "xent", LM_LOGITS, "--labels", tmp_path / "big.npy", "--shift-labels")
    assert "class axis 3 is out of range" in fails("xent", LM_LOGITS, "--labels", LM_IDS,
                                                   "--class-axis", 3)
    assert "take 2-D (N, C) logits" in fails("xent", LM_LOGITS, "--labels", LM_IDS, "--grad",
                                             code=2)
    torch.save(torch.zeros(2, 3, 4), str(tmp_path / "x.pt"))
    assert "never unpickles" in fails("xent", tmp_path / "x.pt", "--labels", LM_IDS)


def test_2d_safetensors_takes_the_2d_path_with_its_options(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0])
    st.write(str(tmp_path / "x.safetensors"), {"logits": x})
    np.save(tmp_path / "y.npy", y)
    doc = json.loads(ok("xent", tmp_path / "x.safetensors", "--labels", tmp_path / "y.npy",
                        "--grad-out", tmp_path / "g.npy", "--format", "json").stdout)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(xt, torch.tensor(y))
    loss.backward()
    assert doc["loss"] == pytest.approx(loss.item(), rel=1e-14)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), xt.grad.numpy(), rtol=1e-13)


def test_softmax_and_compare_stability_read_safetensors(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    st.write(str(tmp_path / "x.safetensors"), {"logits": x})
    ok("softmax", tmp_path / "x.safetensors", "-o", tmp_path / "p.npy")
    p = np.load(tmp_path / "p.npy")
    ref = torch.softmax(torch.tensor(x, dtype=torch.float64), dim=-1).numpy()
    assert p.shape == (2, 3, 5)
    np.testing.assert_allclose(p, ref, rtol=1e-6)
    out = ok("compare-stability", tmp_path / "x.safetensors").stdout
    assert "x.safetensors" in out


@pytest.mark.parametrize("command", ["xent", "softmax", "compare-stability"])
def test_damaged_safetensors_is_one_line_in_every_command(tmp_path, command):
    p = tmp_path / "x.safetensors"
    st.write(str(p), {"logits": np.zeros((2, 3, 4), np.float32)})
    p.write_bytes(p.read_bytes()[:-10])  # truncated
    args = [command, p] + (["--labels", LM_IDS] if command == "xent" else [])
    msg = fails(*args)
    assert "tensor 'logits': truncated: its data ends at offset" in msg and str(p) in msg


def test_vocab_names_classes_without_a_sequence_report(tmp_path):
    """(N, C, d1) logits with --class-axis 1: no sequences, but the table shows tokens."""
    x = np.zeros((2, 3, 4))
    x[:, 2, :] = 5.0  # every position predicts token 2
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.ones((2, 4), dtype=np.int64))
    (tmp_path / "v.txt").write_text("alpha\nbeta\ngamma\n")
    out = ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--class-axis", 1,
             "--vocab", tmp_path / "v.txt").stdout
    assert "beta" in out and "gamma" in out


def test_temperature_reaches_the_lm_path():
    x = st.load(LM_LOGITS)
    ids = st.load(LM_IDS)
    ref = _torch_lm_loss(np.asarray(x, dtype=np.float64) / 2.0, ids)
    doc = json.loads(ok("xent", LM_LOGITS, "--labels", LM_IDS, "--shift-labels",
                        "--temperature", 2, "--format", "json").stdout)
    assert doc["loss"] == pytest.approx(ref, rel=1e-14) and doc["temperature"] == 2.0


def test_lm_options_are_refused_with_the_scheduler():
    msg = fails("xent", LM_LOGITS, "--labels", LM_IDS, "--shift-labels", "--scheduler",
                "synchronous", code=2)
    assert "--shift-labels is not supported with --scheduler" in msg


def test_probs_input_out_of_range_names_the_logits_file(tmp_path):
    p = np.full((2, 3, 4), 0.25)
    p[1, 2, 0] = 1.5
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "y.npy", np.zeros((2, 3), dtype=np.int64))
    msg = fails("xent", tmp_path / "p.npy", "--labels", tmp_path / "y.npy", "--input-kind", "probs")
    assert msg.startswith(f"Error: {tmp_path / 'p.npy'}: ")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_non_finite_inputs_are_counted_in_every_format(tmp_path, dtype):
    """16-bit blocks are checked on their exponent bits (no float64 copy): NaN, +inf
    and -inf entries must still be counted as count_inputs counts them."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 6, 20, generator=g) * 4).to(dtype)
    x[1, 2, 3] = float("nan")
    x[0, 1, 5] = float("inf")
    x[0, 4, :] = float("-inf")
    x[1, 0, 19] = float("-inf")
    ids = torch.randint(1, 20, (2, 6), generator=g)
    from safetensors.torch import save_file
    save_file({"logits": x}, str(tmp_path / "x.safetensors"))
    save_file({"input_ids": ids}, str(tmp_path / "y.safetensors"))
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.safetensors"), "--labels",
                                 str(tmp_path / "y.safetensors"), "--shift-labels"],
                           env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert "non-finite input  NaN 1  +inf 1  -inf 21" in r.stdout
