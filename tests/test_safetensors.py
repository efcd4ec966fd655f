"""safetensors input: files written by the `safetensors` package read bit-exactly; hostile files refused in one line."""
from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest

from smx_cli.errors import SmxError
from smx_cli.io import read_array
from smx_cli.io import safetensors as st

from conftest import need

try:  # the test extra installs it (it writes the files the reader is checked against)
    import safetensors.numpy as stnp
except ImportError:
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("safetensors is not installed", allow_module_level=True)


def _torch():
    return need("torch"), need("safetensors.torch")


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


@pytest.mark.parametrize("dname", list(st.DTYPES))
def test_every_dtype_written_by_safetensors_numpy_reads_bit_exactly(tmp_path, dname):
    rng = np.random.default_rng(0)
    dtype = st.DTYPES[dname]
    if dname[0] in "IU":
        a = rng.integers(0, 100, size=(2, 3, 7)).astype(dtype)
    else:
        a = (rng.standard_normal((2, 3, 7)) * 50).astype(dtype)
        a.reshape(-1)[:3] = np.array([np.inf, -np.inf, np.nan]).astype(dtype)
    p = tmp_path / "x.safetensors"
    stnp.save_file({"logits": a, "other": np.zeros(3, np.float32)}, str(p))
    assert st.read_info(str(p))[0]["logits"].dtype_name == dname
    r = read_array(str(p))
    assert r.values.dtype == dtype and _bits(r.values) == _bits(a)
    info = st.read_info(str(p))[0]["logits"]
    blocks = [b.copy() for _, _, b in st.iter_blocks(str(p), info, block_bytes=3 * 7 * 2)]
    assert _bits(np.concatenate(blocks)) == _bits(a.reshape(6, 7))


TORCH_NAMES = ["BF16", "F16", "F32", "F64", "I64", "I32", "I16", "I8", "U8"]


@pytest.mark.parametrize("dname", TORCH_NAMES)
def test_every_dtype_written_by_torch_reads_bit_exactly(tmp_path, dname):
    torch, sttorch = _torch()
    TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
                    "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
                    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8}
    g = torch.Generator().manual_seed(0)
    if dname[0] in "IU":
        t = torch.randint(0, 100, (2, 3, 7), generator=g).to(TORCH_DTYPES[dname])
    else:
        t = (torch.randn(2, 3, 7, generator=g, dtype=torch.float64) * 50).to(TORCH_DTYPES[dname])
        t.view(-1)[:3] = torch.tensor([float("inf"), float("-inf"), float("nan")]).to(t.dtype)
    p = tmp_path / "x.safetensors"
    sttorch.save_file({"logits": t, "other": torch.zeros(3)}, str(p))
    r = read_array(str(p))
    assert r.fmt == "safetensors" and r.values.shape == (2, 3, 7)
    assert r.values.dtype == st.DTYPES[dname]
    # the same bits as torch holds
    ref = t.view(torch.int16).numpy() if dname == "BF16" else t.numpy()
    assert _bits(r.values) == _bits(ref)
    # streamed in row blocks: the same bits too
    info = st.read_info(str(p))[0]["logits"]
    blocks = [b.copy() for _, _, b in st.iter_blocks(str(p), info, block_bytes=3 * 7 * 2)]
    assert _bits(np.concatenate(blocks)) == _bits(ref.reshape(6, 7))


def test_key_chooses_the_tensor_and_stdin_bytes(tmp_path, monkeypatch):
    p = tmp_path / "x.safetensors"
    stnp.save_file({"a": np.arange(3.0), "b": np.ones((2, 2), np.float32)}, str(p))
    assert read_array(str(p), key="b").values.shape == (2, 2)
    with pytest.raises(SmxError, match=r"holds 2 tensors \(a, b\); choose one with --key"):
        read_array(str(p))
    with pytest.raises(SmxError, match=r"no tensor 'c' \(it has: a, b\)"):
        read_array(str(p), key="c")
    # no .safetensors name: recognised by its header
    q = tmp_path / "logits.dat"
    q.write_bytes(p.read_bytes())
    assert read_array(str(q), key="a").values.tolist() == [0.0, 1.0, 2.0]
    import io
    import sys
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(p.read_bytes())))
    assert read_array("-", key="a").values.tolist() == [0.0, 1.0, 2.0]


def _file(tmp_path, header: dict, data: bytes, raw_header: bytes | None = None,
          length: int | None = None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes((len(h) if length is None else length).to_bytes(8, "little") + h + data)
    return str(p)


def _t(dtype="F32", shape=(2, 2), offs=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


HOSTILE = [
    ("length past the file", {"x": _t()}, bytes(16), None, 10**6,
     r"bad safetensors header length 1000000 at offset 0 \(the file has"),
    ("length huge", {"x": _t()}, bytes(16), None, 2**63,
     r"bad safetensors header length \d+ at offset 0.*limit is 100 MB"),
    ("not JSON", None, bytes(16), b"{not json", None, r"header is not valid JSON at offset 9"),
    ("JSON list", None, b"", b"[1, 2]", None, r"header at offset 8 is not a JSON object"),
    ("unknown dtype", {"x": _t("Q7")}, bytes(16), None, None,
     r"tensor 'x': dtype 'Q7' is unknown"),
    ("unsupported dtype", {"x": _t("F8_E4M3", offs=(0, 4))}, bytes(4), None, None,
     r"tensor 'x': dtype 'F8_E4M3' is supported by safetensors but not by smx"),
    ("shape lies", {"x": _t(shape=(3, 2))}, bytes(16), None, None,
     r"tensor 'x': shape \(3, 2\) \(F32\) needs 24 bytes but data_offsets 0..16 at offset \d+ "
     r"hold 16"),
    ("huge shape", {"x": _t(shape=(2**40, 2**40))}, bytes(16), None, None,
     r"tensor 'x': shape \(1099511627776, 1099511627776\) \(F32\) needs \d+ bytes"),
    ("negative dim", {"x": _t(shape=(-2, 2))}, bytes(16), None, None,
     r"tensor 'x': shape \[-2, 2\] is not a list of non-negative integers"),
    ("offsets backwards", {"x": _t(offs=(16, 0))}, bytes(16), None, None,
     r"tensor 'x': data_offsets 16..0 at offset \d+ run backwards"),
    ("offsets not ints", {"x": _t(offs=("0", 16))}, bytes(16), None, None,
     r"tensor 'x': data_offsets \['0', 16\] are not two integers"),
    ("truncated", {"x": _t(shape=(2, 4), offs=(0, 32))}, bytes(16), None, None,
     r"tensor 'x': truncated: its data ends at offset \d+ but the file has \d+ bytes"),
    ("overlap", {"x": _t(), "y": _t(offs=(8, 24))}, bytes(24), None, None,
     r"tensor 'y': data at offset \d+ overlaps tensor 'x' \(offsets \d+..\d+\)"),
    ("missing fields", {"x": {"dtype": "F32"}}, bytes(16), None, None,
     r"tensor 'x': header entry at offset 8 lacks dtype, shape or data_offsets"),
    ("short file", None, b"", b"", None, None),
]


@pytest.mark.parametrize("what,header,data,raw,length,match", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_refused_in_one_line(tmp_path, what, header, data, raw, length, match):
    if what == "short file":
        p = tmp_path / "short.safetensors"
        p.write_bytes(b"\x10\x00\x00")
        path, match = str(p), r"not a safetensors file: 3 bytes, shorter than the 8-byte"
    else:
        path = _file(tmp_path, header, data, raw, length)
    with pytest.raises(SmxError, match=match) as info:
        read_array(path, key="x" if header and "y" in header else None)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(path)


def test_data_ending_early_while_streaming_names_tensor_and_offset(tmp_path):
    p = tmp_path / "x.safetensors"
    stnp.save_file({"x": np.ones((4, 3), np.float32)}, str(p))
    info = st.read_info(str(p))[0]["x"]
    p.write_bytes(p.read_bytes()[:-6])  # truncated after the header was checked
    with pytest.raises(SmxError, match=r"tensor 'x': the data ends early at offset \d+ \(row 3 of 4\)"):
        list(st.iter_blocks(str(p), info, block_bytes=12))


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_torch_pickles_are_refused_never_unpickled(tmp_path, suffix, monkeypatch):
    torch, _ = _torch()
    # a bare pickle (no torch needed to make one)
    b = tmp_path / f"bare{suffix}"
    b.write_bytes(pickle.dumps({"logits": [1.0, 2.0]}))
    with pytest.raises(SmxError, match="is a pickle"):
        read_array(str(b))
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    p = tmp_path / f"logits{suffix}"
    torch.save(torch.zeros(2, 3), str(p))
    with pytest.raises(SmxError, match=r"is a pickle .*smx never unpickles files -- save the "
                                       r"tensor with safetensors"):
        read_array(str(p))
    q = tmp_path / f"legacy{suffix}"
    torch.save(torch.zeros(2, 3), str(q), _use_new_zipfile_serialization=False)
    with pytest.raises(SmxError, match="is a pickle"):
        read_array(str(q))
    r = tmp_path / f"other{suffix}"
    r.write_bytes(b"\x00\x01garbage")
    with pytest.raises(SmxError, match="neither safetensors nor NPY; smx never unpickles"):
        read_array(str(r))
    assert calls == []


def test_header_length_starting_with_0x80_is_not_a_pickle(tmp_path):
    """A header of 0x0280 = 640 bytes: the file starts 80 02 00, like a pickle's PROTO 2."""
    p = tmp_path / "x.dat"
    for pad in range(700):
        st.write(str(p), {"logits": np.arange(3.0)}, {"pad": "x" * pad})
        if p.read_bytes()[:2] == b"\x80\x02":
            break
    assert p.read_bytes()[:3] == b"\x80\x02\x00"
    assert read_array(str(p)).values.tolist() == [0.0, 1.0, 2.0]


def test_writer_round_trips_through_the_reference_reader(tmp_path):
    import ml_dtypes
    torch, sttorch = _torch()
    p = tmp_path / "w.safetensors"
    x = np.arange(12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
    st.write(str(p), {"logits": x, "ids": np.arange(3)}, {"k": "v"})
    got = sttorch.load_file(str(p))
    assert torch.equal(got["logits"], torch.arange(12.0).reshape(3, 4).bfloat16())
    assert got["ids"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("spec,match", [
    ({"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}, r"dtype \['F32'\] is not a name"),
    ({"dtype": 32, "shape": [2], "data_offsets": [0, 8]}, r"dtype 32 is not a name"),
    ({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}, r"shape '2' is not a list"),
    ({"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}, r"shape \[True, 2\]"),
    ({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, r"shape \[2.0\]"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, r"data_offsets \[0\] are not two"),
    ({"dtype": "F32", "shape": [2], "data_offsets": None}, r"data_offsets None"),
    ("F32", r"lacks dtype, shape or data_offsets"),
])
def test_wrong_types_in_the_header(tmp_path, spec, match):
    path = _file(tmp_path, {"x": spec}, bytes(8))
    with pytest.raises(SmxError, match=match):
        read_array(path)


def test_random_damage_is_an_smx_error_or_a_clean_read(tmp_path):
    """Flip bytes of a valid file's header and data: never another exception, never a hang."""
    p = tmp_path / "x.safetensors"
    stnp.save_file({"logits": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                    "ids": np.arange(6, dtype=np.int64)}, str(p))
    good = p.read_bytes()
    rng = np.random.default_rng(16)
    q = tmp_path / "bad.safetensors"
    for _ in range(400):
        b = bytearray(good)
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(0, min(len(b), 8 + int.from_bytes(good[:8], "little"))))
            b[i] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            b = b[:int(rng.integers(0, len(b)))]
        q.write_bytes(bytes(b))
        try:
            r = read_array(str(q), key="logits")
            assert r.values.size == math.prod(r.values.shape)
        except SmxError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(q))


def test_deep_json_and_newline_names_stay_one_line(tmp_path):
    path = _file(tmp_path, None, b"", b"[" * 100000 + b"]" * 100000)
    with pytest.raises(SmxError, match="nests JSON too deeply|not a JSON object|not valid JSON"):
        read_array(path)
    p = tmp_path / "n.safetensors"
    st.write(str(p), {"a\nb": np.zeros(2), "c": np.zeros(2)})
    with pytest.raises(SmxError) as info:
        read_array(str(p))
    assert "\n" not in str(info.value) and "a\\nb" in str(info.value)
