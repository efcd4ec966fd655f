"""The terminal and pipeline contract (issue 14).

Tables never cut a number at any width; data on stdout, messages on stderr;
-o and --format agree; the verdicts of compare-stability mean something.
"""
from __future__ import annotations

import json
import os
import re
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from smx_cli.cli import options as options_mod
from smx_cli.cli.app import cli, main

from conftest import SAMPLES

SEEDS = os.path.join(SAMPLES, "seeds.csv")
SATURATED = os.path.join(SAMPLES, "saturated.csv")
MNIST = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
MNIST_CSV = os.path.join(SAMPLES, "mnist_lenet_logits.csv")
LABELS_CSV = os.path.join(SAMPLES, "mnist_lenet_labels.csv")

_CUT = re.compile(r"[\d.]…|…[\d.]|-…")


def cut_numbers(text: str) -> list[str]:
    """Every place where an ellipsis touches a number (a cut cell)."""
    return [text[max(m.start() - 12, 0):m.end() + 12] for m in _CUT.finditer(text)]


def test_the_scanner_finds_cut_numbers():
    assert cut_numbers("  0.00091…   367…") and cut_numbers("-…") and cut_numbers("…5")
    assert not cut_numbers("rows 1, 2 and 3 more (all in --format json)")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """Language-model-sized rows: 4 x 50,000 logits, plus a matching upstream gradient."""
    d = tmp_path_factory.mktemp("vocab")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 50_000)) * 3).astype(np.float32)
    x[1, 36_712] = 40.0  # a confident row with a 5-digit class index
    np.save(d / "x.npy", x)
    np.save(d / "g.npy", rng.standard_normal((4, 50_000)).astype(np.float32))
    up = rng.standard_normal((2500, 10))
    np.save(d / "g_mnist.npy", up)
    return d


def _cases(vocab):
    v = str(vocab / "x.npy")
    return [
        ["softmax", SEEDS],
        ["softmax", SEEDS, "--dtype", "float16", "--variant", "naive"],
        ["softmax", SEEDS, "--dtype", "float16", "--emulate", "torch"],
        ["softmax", MNIST, "--rows", "5"],
        ["softmax", MNIST, "--top-k", "3", "--rows", "5"],
        ["softmax", MNIST, "--top-k", "9", "--rows", "3", "--digits", "17"],
        ["softmax", v, "--top-k", "5"],
        ["softmax", v],
        ["softmax", v, "--upstream", str(vocab / "g.npy"), "--rows", "3"],
        ["softmax", MNIST, "--upstream", str(vocab / "g_mnist.npy"), "--rows", "3"],
        ["softmax", SATURATED, "--grad", "--check-grad"],
        ["softmax", MNIST, "--grad", "--rows", "2"],
        ["softmax", SEEDS, "--variant", "gumbel", "--samples", "3", "--seed", "0"],
        ["softmax", SEEDS, "--variant", "sparsemax"],
        ["xent", MNIST_CSV, "--labels", LABELS_CSV, "--worst", "3"],
        ["xent", MNIST_CSV, "--labels", LABELS_CSV, "--worst", "3", "--grad"],
        ["compare-stability"],
        ["compare-stability", MNIST, "--dtypes", "float16"],
        ["compare-stability", "--sweep"],
        ["calibrate", MNIST, "--labels", os.path.join(SAMPLES, "mnist_lenet_labels.npy")],
        ["xent", os.path.join(SAMPLES, "lm_logits.safetensors"), "--labels",
         os.path.join(SAMPLES, "lm_ids.safetensors"), "--shift-labels", "--vocab",
         os.path.join(SAMPLES, "lm_vocab.txt")],
    ]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_no_cell_cuts_a_number(width, vocab, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    for args in _cases(vocab):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, (args, r.stderr)
        assert not cut_numbers(r.stdout), (width, args, cut_numbers(r.stdout))
        # piped output carries no trailing padding
        assert not [ln for ln in r.stdout.splitlines() if ln.endswith(" ")], (width, args)


def test_top_k_too_wide_shows_fewer_and_says_so(vocab, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    r = CliRunner().invoke(cli, ["softmax", str(vocab / "x.npy"), "--top-k", "5"])
    assert "top 5 does not fit in 60 columns: showing the top" in " ".join(r.stdout.split())
    assert "36712" in r.stdout  # the confident row's class, whole


# ----------------------------------------------------------------------------
# stdout carries data, stderr carries messages


def run(*args, input=None):
    return CliRunner().invoke(cli, [*map(str, args)], input=input)


def test_data_on_stdout_summary_on_stderr():
    r = run("softmax", SEEDS, "--format", "csv", "--dtype", "float16", "--variant", "naive")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[2] == "nan,nan,nan"   # the data, untouched
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smx: diagnostics: broken")
    assert "NaN in 2 rows (rows 2, 3)" in lines[0]       # the rows are named


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json"])
def test_every_data_format_gets_the_summary(fmt):
    r = run("softmax", SEEDS, "--format", fmt)
    assert r.exit_code == 0 and r.stderr == "smx: diagnostics: ok -- 4 rows\n"


def test_output_file_wrote_on_stderr_quiet_and_verbose(tmp_path):
    out = tmp_path / "p.csv"
    r = run("softmax", SEEDS, "-o", out)
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr.splitlines() == ["smx: diagnostics: ok -- 4 rows", f"wrote {out}"]
    r = run("softmax", SEEDS, "-o", out, "--quiet")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    r = run("softmax", SEEDS, "--format", "json", "--quiet")
    assert r.stderr == "" and json.loads(r.stdout)["command"] == "softmax"
    r = run("softmax", SEEDS, "-o", out, "--verbose")
    assert "diagnostics: ok" in r.stderr and "non-finite input" in r.stderr  # the full panel
    assert r.stdout == ""


def test_summary_only_mode():
    r = run("softmax", MNIST, "--summary")
    assert "diagnostics: ok" in r.stdout and "#1 class" not in r.stdout


def test_stdin_when_file_is_omitted():
    r = run("softmax", "--format", "csv", input="1,2,3\n0,0,0\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[1] == "0.3333333333333333,0.3333333333333333,0.3333333333333333"


class _Tty:
    def isatty(self):
        return True


def test_missing_file_on_a_terminal_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(options_mod, "sys", types.SimpleNamespace(stdin=_Tty(), stdout=_Tty()))
    r = run("softmax")
    assert r.exit_code == 2 and "pipe them to stdin" in r.stderr


def test_npy_to_a_terminal_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(options_mod, "sys", types.SimpleNamespace(stdin=_Tty(), stdout=_Tty()))
    r = run("softmax", SEEDS, "--format", "npy")
    assert r.exit_code == 2 and "binary" in r.stderr


@pytest.mark.parametrize("name, fmt, why", [
    ("p.csv", "json", "csv by its extension but --format says json"),
    ("p.bin", None, "use .npy, .npz, .csv, .tsv, .json"),
    ("probs", None, "from no extension"),
    ("p.npy", "table", "--format says table"),
])
def test_extension_decides_and_conflicts_are_usage_errors(tmp_path, name, fmt, why):
    args = ["softmax", SEEDS, "-o", tmp_path / name] + (["--format", fmt] if fmt else [])
    r = run(*args)
    assert r.exit_code == 2 and why in r.stderr.replace("\n", " ")
    assert not (tmp_path / name).exists()


def test_extension_and_format_agreeing_is_fine(tmp_path):
    r = run("softmax", SEEDS, "-o", tmp_path / "p.json", "--format", "json")
    assert r.exit_code == 0 and json.loads((tmp_path / "p.json").read_text())["shape"] == [4, 3]


def test_compare_output_must_be_json(tmp_path):
    r = run("compare-stability", "-o", tmp_path / "r.csv")
    assert r.exit_code == 2 and ".json" in r.stderr and not (tmp_path / "r.csv").exists()
    r = run("compare-stability", "-o", tmp_path / "r.json")
    assert r.exit_code == 0 and f"wrote {tmp_path / 'r.json'}" in r.stderr


def test_bare_smx_shows_the_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["smx"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith("Usage: smx") and "Commands:" in out.out and out.err == ""
    assert max(len(ln) for ln in out.out.splitlines()) <= 100


@pytest.mark.parametrize("command", ["softmax", "xent", "compare-stability", "calibrate"])
def test_help_fits_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = CliRunner().invoke(cli, [command, "--help"], terminal_width=80)
    assert r.exit_code == 0
    long = [ln for ln in r.stdout.splitlines() if len(ln) > 80]
    assert not long, long


# ----------------------------------------------------------------------------
# naming rows, hints, the saturation panel


def test_panel_names_nan_rows_and_json_lists_all():
    x = np.zeros((9, 3))
    x[[1, 4, 5, 6, 7, 8], 0] = np.nan
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n"
    r = run("softmax", "-", input=text)
    flat = " ".join(r.stdout.split())
    assert "NaN rows rows 1, 4, 5, 6, 7 and 1 more" in flat
    doc = json.loads(run("softmax", "-", "--format", "json", input=text).stdout)
    assert doc["diagnostics"]["nan_output_row_index"] == [1, 4, 5, 6, 7, 8]


def test_nan_row_has_no_prediction():
    text = "nan," * 19 + "nan\n" + ",".join(str(i) for i in range(20)) + "\n"
    r = run("softmax", "-", "--top-k", "2", input=text)
    row0 = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("0 "))
    assert "undefined" in row0 and " 0 " not in row0.split("undefined")[1][:4]


def test_overflow_hint_is_actionable():
    r = run("softmax", SEEDS, "--dtype", "float16", "--variant", "naive")
    flat = " ".join(r.stdout.split())
    assert "exp overflows float16 above x = 11.09" in flat and "upcast" in flat


def test_saturation_panel_points_to_xent():
    r = run("softmax", SATURATED, "--grad")
    flat = " ".join(r.stdout.split())
    assert "softmax-Jacobian" in flat and "p - y" in flat and "smx xent" in flat


def test_accurate_underflow_is_information_not_a_warning():
    r = run("softmax", SEEDS)
    flat = " ".join(r.stdout.split())
    assert "diagnostics: ok " in flat and "with warnings" not in flat
    assert "correctly rounded" in flat


def test_one_row_is_singular():
    r = run("softmax", "-", input="1,2\n")
    flat = " ".join(r.stdout.split())
    assert "1 row x 2 classes" in flat and "1 rows" not in flat


# ----------------------------------------------------------------------------
# compare-stability: verdicts against each variant's own bound, --fail-on


def test_verdicts_do_not_invite_the_overflowing_formula():
    doc = json.loads(run("compare-stability", MNIST, "--format", "json").stdout)
    verdict = {(r["variant"], r["dtype"]): r["verdict"] for r in doc["results"]}
    assert verdict[("naive", "float16")] == "broken"
    # every shifted variant does what its analysis promises, in every format
    for (v, dt), got in verdict.items():
        if (v, dt) != ("naive", "float16"):
            assert got == "ok", (v, dt)


def test_a_variant_outside_its_bound_is_inaccurate(monkeypatch):
    from smx_cli.analysis import measure as compare_mod
    real = compare_mod.compute

    def sloppy(x, variant, t, dtype):  # a broken kernel: 200 ulps off on every entry
        res = real(x, variant, t, dtype)
        if variant == "stable" and dtype is not None:
            fmt = res.fmt
            res.values = fmt.cast(res.values.astype(np.float64) * (1 + 200 * fmt.eps))
        return res

    monkeypatch.setattr(compare_mod, "compute", sloppy)
    doc = json.loads(run("compare-stability", "--dtypes", "float32", "--variants",
                         "stable,smx", "--format", "json").stdout)
    got = {r["variant"]: r for r in doc["results"]}
    assert got["stable"]["verdict"] == "inaccurate" and got["stable"]["max_bound_ratio"] > 1
    assert got["smx"]["verdict"] == "ok"
    r = run("compare-stability", "--dtypes", "float32", "--variants", "stable,smx",
            "--fail-on", "inaccurate")
    assert r.exit_code == 1 and "stable in float32" in r.stderr
    r = run("compare-stability", "--dtypes", "float32", "--variants", "stable,smx",
            "--fail-on", "broken")
    assert r.exit_code == 0


def test_fail_on_broken():
    r = run("compare-stability", "--fail-on", "broken")
    assert r.exit_code == 1 and r.stderr.startswith("Error: --fail-on broken")
    assert "naive in float16" in r.stderr and r.stderr.count("\n") == 1
    r = run("compare-stability", "--variants", "stable,smx", "--fail-on", "broken")
    assert r.exit_code == 0


# ----------------------------------------------------------------------------
# one pipeline; columns that are not logits


def test_streamed_and_whole_array_show_the_same(tmp_path, monkeypatch):
    """Many blocks or one: the same table, panel and --strict verdict."""
    from smx_cli.analysis import pipeline
    monkeypatch.setattr(pipeline, "STREAM_BLOCK", 7 * 10 * 8)  # 7 rows per block
    x = np.random.default_rng(2).standard_normal((40, 10)) * 30
    x[5, 3] = np.nan
    x[17, :] = -np.inf
    path = tmp_path / "x.npy"
    np.save(path, x)
    streamed = run("softmax", path, "--rows", "9")
    whole = CliRunner().invoke(cli, ["softmax", "-", "--rows", "9"],
                               input=path.read_bytes())
    assert "streamed in row blocks" in streamed.stdout
    body = [ln for ln in streamed.stdout.splitlines()
            if "streamed" not in ln and str(path) not in ln and "from" not in ln]
    other = [ln for ln in whole.stdout.splitlines() if "<stdin>" not in ln and "from" not in ln]
    assert body == other
    s = run("softmax", path, "--strict", "--format", "json", "-o", tmp_path / "p.json")
    w = CliRunner().invoke(cli, ["softmax", "-", "--strict", "--format", "csv"],
                           input=path.read_bytes())
    assert s.exit_code == w.exit_code == 1
    assert s.stderr.splitlines()[-1] == w.stderr.splitlines()[-1]
    assert "rows 5, 17" in s.stderr


def test_label_column_is_left_out_and_a_label_like_column_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c,label\n1,2,3,0\n3,1,0,2\n")
    r = run("softmax", path, "--format", "csv")
    assert r.stdout.splitlines()[0] == "a,b,c,label"  # as asked, but said on stderr
    assert "'label' looks like labels" in r.stderr and "--label-column label" in r.stderr
    r = run("softmax", path, "--format", "csv", "--label-column", "label")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "a,b,c"
    assert "looks like labels" not in r.stderr
    p = np.array([float(v) for v in r.stdout.splitlines()[1].split(",")])
    e = np.exp(np.array([1.0, 2.0, 3.0]) - 3)
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-15)
    r = run("softmax", path, "--label-column", "nope")
    assert r.exit_code == 1 and "no label column 'nope'" in r.stderr


# ----------------------------------------------------------------------------
# hostile input to the new options


def _npy_header(shape, descr="<f8"):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    h = h + " " * (63 - len(h) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode()


@pytest.mark.parametrize("extra", [
    ["--dtype", "float16", "--emulate", "torch"],
    ["--label-column", "0"],
    ["--dtype", "bfloat16", "--emulate", "torch", "--format", "csv", "--quiet"],
])
@pytest.mark.parametrize("case", ["truncated", "huge", "strings", "object"])
def test_new_options_on_hostile_files(tmp_path, extra, case):
    path = tmp_path / ("x.csv" if case == "strings" else "x.npy")
    if case == "truncated":
        path.write_bytes(_npy_header("(100, 10)") + b"\x00" * 80)
    elif case == "huge":
        path.write_bytes(_npy_header("(10000000000000, 1000000)") + b"\x00" * 64)
    elif case == "strings":
        path.write_text("a,b\n1,x\n")
    else:
        path.write_bytes(_npy_header("(2, 2)", "|O") + b"\x00" * 32)
    r = run("softmax", path, *extra)
    assert r.exit_code == 1, (case, extra, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args, code", [
    (["--emulate", "bogus"], 2),
    (["--label-column", "7"], 1),
    (["--label-column", "-9"], 1),
    (["--label-column", ""], 1),
])
def test_new_options_bad_values(args, code):
    r = run("softmax", SEEDS, *args)
    assert r.exit_code == code, (args, r.stderr)
    assert "Traceback" not in r.stderr
    if code == 1:  # (usage errors are one line through main(); see test_errors.py)
        assert r.stderr.strip().count("\n") == 0


def test_fail_on_bad_value_and_sweep():
    assert run("compare-stability", "--fail-on", "never").exit_code == 2
    r = run("compare-stability", "--sweep", "--max-scale", "1e3", "--fail-on", "broken")
    assert r.exit_code == 1 and "break within the sweep" in r.stderr


def test_id_column_names_rows_everywhere(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("id,a,b,c\ncat-17,1,2,3\ndog 2,3,1,nan\nemu,0,0,0\n")
    r = run("softmax", path, "--id-column", "id")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.splitlines()
    rule = next(i for i, ln in enumerate(out) if ln.strip().startswith("───"))
    table_rows = [ln.split()[0] for ln in out[rule + 1:rule + 4]]
    assert table_rows == ["cat-17", "dog", "emu"]
    flat = " ".join(r.stdout.split())
    assert "NaN rows row dog 2" in flat          # the panel names the row by its id
    r = run("softmax", path, "--id-column", "id", "--format", "csv")
    lines = r.stdout.splitlines()
    assert lines[0] == "id,a,b,c" and lines[2] == "dog 2,nan,nan,nan"
    assert lines[3] == "emu,0.3333333333333333,0.3333333333333333,0.3333333333333333"
    r = run("softmax", path, "--id-column", "0", "--format", "json")
    assert json.loads(r.stdout)["ids"] == ["cat-17", "dog 2", "emu"]
    # without it the id column is an error naming the cell
    r = run("softmax", path)
    assert r.exit_code == 1 and "'cat-17' is not a number" in r.stderr
    r = run("softmax", path, "--id-column", "id", "--label-column", "a", "--format", "csv")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "id,b,c"
    r = run("softmax", path, "--id-column", "id", "--label-column", "id")
    assert r.exit_code == 1 and "--id-column and --label-column both name column 0" in r.stderr
    npy = tmp_path / "x.npy"
    np.save(npy, np.array([[7.0, 1, 2], [9.0, 2, 1]]))
    r = run("softmax", npy, "--id-column", "0", "--format", "csv")
    assert [ln.split(",")[0] for ln in r.stdout.splitlines()] == ["7", "9"]


def test_xent_data_on_stdout_summary_on_stderr(tmp_path):
    r = run("xent", MNIST, "--labels", os.path.join(SAMPLES, "mnist_lenet_labels.npy"),
            "--format", "csv")
    assert r.exit_code == 0 and r.stdout.startswith("row,label,")
    assert r.stderr == "smx: xent: 2,500 samples; loss (mean) 0.0751918; accuracy 98.92 %\n"


LINE = "smx: xent: 2,500 samples; loss (mean) 0.0751918; accuracy 98.92 %"


@pytest.mark.parametrize("args", [[], ["--shift-labels"]])
def test_xent_output_file_contract_as_softmax(tmp_path, args):
    """xent -o FILE: nothing on stdout, the summary line and 'wrote FILE' on stderr;
    --quiet silences both, --verbose gives the full panel; what was asked for (--worst,
    --summary) still shows on stdout. The same for N-d logits (--shift-labels)."""
    if args:
        x, y = [os.path.join(SAMPLES, f) for f in ("lm_logits.safetensors", "lm_ids.safetensors")]
        line = "smx: xent: 288 samples; loss (mean) 2.44105; accuracy 40.43 %"
    else:
        x, y, line = MNIST, os.path.join(SAMPLES, "mnist_lenet_labels.npy"), LINE
    out = tmp_path / "l.csv"
    r = run("xent", x, "--labels", y, *args, "-o", out)
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr.splitlines() == [line, f"wrote {out}"]
    assert out.read_text().startswith(("row,label,", "seq,pos,"))
    r = run("xent", x, "--labels", y, *args, "-o", out, "--quiet")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    r = run("xent", x, "--labels", y, *args, "-o", out, "--verbose")
    assert r.exit_code == 0 and r.stdout == ""
    assert "╭─ summary" in r.stderr and "non-finite input" in r.stderr  # the full panel
    assert r.stderr.splitlines()[-1] == f"wrote {out}"
    r = run("xent", x, "--labels", y, *args, "-o", out, "--summary")
    assert "╭─ summary" in r.stdout and "row" not in r.stdout.split("╭─ summary")[0]
    assert r.stderr.splitlines() == [line, f"wrote {out}"]
    r = run("xent", x, "--labels", y, *args, "-o", out, "--worst", "2")
    assert "2 highest-loss" in r.stdout or "worst" in r.stdout
    assert r.stderr.splitlines() == [line, f"wrote {out}"]
    # data on stdout: the line on stderr, --quiet silences it
    r = run("xent", x, "--labels", y, *args, "--format", "json", "--quiet")
    assert r.exit_code == 0 and r.stderr == "" and json.loads(r.stdout)["command"] == "xent"


def test_xent_summary_only_shows_the_panel():
    r = run("xent", MNIST, "--labels", os.path.join(SAMPLES, "mnist_lenet_labels.npy"),
            "--summary")
    assert r.exit_code == 0 and r.stdout.lstrip().startswith("╭─ summary")
    assert "loss (mean)" in r.stdout and r.stderr == ""


@pytest.mark.parametrize("command", ["softmax", "xent", "xent-lm"])
def test_strict_failure_still_says_the_complete_file_was_written(tmp_path, command):
    """-o with --strict: the file is complete, so stderr says `wrote FILE`, then the error."""
    rng = np.random.default_rng(3)
    out = tmp_path / "out.json"
    if command == "xent-lm":  # the B x T x V path (class axis last)
        x = rng.standard_normal((2, 3, 5))
        x[1, 2, :] = np.nan
        y = rng.integers(0, 5, (2, 3))
        args = ["xent", "--class-axis", "-1"]
    else:
        x = rng.standard_normal((6, 4))
        x[2, 1] = np.nan
        y = rng.integers(0, 4, 6)
        args = [command]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    if command != "softmax":
        args += ["--labels", str(tmp_path / "y.npy")]
    r = run(*args[:1], tmp_path / "x.npy", *args[1:], "--strict", "--format", "json", "-o", out)
    assert r.exit_code == 1 and out.exists()
    lines = r.stderr.splitlines()
    assert lines[-1].startswith("Error: --strict") and f"wrote {out}" in lines[-2]
    json.loads(out.read_text())
