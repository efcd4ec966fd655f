"""`smx softmax` end to end: every option reaches the math; what the user sees.

The expected numbers come from smx_cli.core.reference.exact_softmax or from hand
arithmetic, never from running the command on another path.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.core.reference import exact_softmax

SEEDS = os.path.join(SAMPLES, "seeds.csv")
MNIST_NPY = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
MNIST_CSV = os.path.join(SAMPLES, "mnist_lenet_logits.csv")


def run(*args, input=None, ok=True):
    result = CliRunner().invoke(cli, ["softmax", *map(str, args)], input=input)
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        # stderr carries only the messages beside the data (issue 14)
        assert all(line.startswith(("smx: diagnostics: ", "wrote "))
                   for line in result.stderr.splitlines()), result.stderr
    return result


def csv_out(*args, input=None) -> np.ndarray:
    r = run(*args, "--format", "csv", input=input)
    lines = r.stdout.splitlines()
    try:
        float(lines[0].split(",")[0]) if lines else None
    except ValueError:
        lines = lines[1:]  # the header of class names
    return np.array([[float(v) for v in line.split(",")] for line in lines])


def exact(x, temperature=1.0, log=False):
    p, lp = exact_softmax(np.atleast_2d(np.asarray(x, dtype=np.float64)), temperature)
    return (lp if log else p).astype(np.float64)


def one_line_error(result, code=1):
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def logits_csv(tmp_path):
    x = np.array([[1.0, 2.0, 3.0, 0.5], [10.0, -3.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    path = tmp_path / "x.csv"
    path.write_text("a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in x) + "\n")
    return str(path), x


# ----------------------------------------------------------------------------
# the numbers


def test_seed_examples_table():
    r = run(SEEDS)
    out = r.stdout
    for text in ("0.0900306", "0.244728", "0.665241", "0.0171478", "0.93624"):
        assert text in out
    assert "diagnostics" in out and "stable (accurate, float64 result" in out
    got = csv_out(SEEDS)
    np.testing.assert_allclose(got, exact(np.loadtxt(SEEDS, delimiter=",")), rtol=1e-15)
    np.testing.assert_array_equal(got[2], [0, 0, 1])
    np.testing.assert_array_equal(got[3], [0, 0, 1])


@pytest.mark.parametrize("variant", ["stable", "online", "naive", "lse"])
def test_variants_reach_the_math(logits_csv, variant):
    path, x = logits_csv
    got = csv_out(path, "--variant", variant)
    np.testing.assert_allclose(got, exact(x), rtol=1e-14)
    meta = json.loads(run(path, "--variant", variant, "--format", "json").stdout)
    assert meta["variant"] == variant


def test_variant_log_gives_log_probabilities(logits_csv):
    path, x = logits_csv
    got = csv_out(path, "--variant", "log")
    np.testing.assert_allclose(got, exact(x, log=True), rtol=1e-14)
    assert (got < 0).all()
    assert "log_softmax(x)" in run(path, "--variant", "log").stdout


def test_naive_differs_from_stable_where_it_overflows():
    stable = csv_out(SEEDS)
    naive = csv_out(SEEDS, "--variant", "naive")
    assert np.isnan(naive[2]).all() and not np.isnan(stable[2]).any()


def test_temperature_reaches_the_math(logits_csv):
    path, x = logits_csv
    got = csv_out(path, "--temperature", "2.5")
    np.testing.assert_allclose(got, exact(x, 2.5), rtol=1e-14)
    assert not np.allclose(got, exact(x))
    assert "x/2.5" in run(path, "-t", "2.5").stdout


def test_dtype_emulates(logits_csv):
    path, x = logits_csv
    for dtype, bits in (("float16", 11), ("bfloat16", 8), ("float32", 24)):
        r = run(path, "--dtype", dtype, "--format", "npy")
        got = np.load(io.BytesIO(r.stdout_bytes))
        assert got.dtype == (np.float16 if dtype == "float16" else np.float32)
        want = exact(x)
        np.testing.assert_allclose(got, want, rtol=2.0 ** (3 - bits), atol=2.0 ** -bits)
        if dtype != "float32":
            assert not np.allclose(got, want, rtol=1e-7, atol=0)  # it really rounded
        meta = json.loads(run(path, "--dtype", dtype, "--format", "json").stdout)
        assert meta["dtype"] == dtype and meta["emulated"] is True
    assert "emulated float16 arithmetic" in run(path, "--dtype", "float16").stdout


def test_float16_naive_on_seeds_reports_the_overflow():
    r = run(SEEDS, "--dtype", "float16", "--variant", "naive")
    out = r.stdout
    assert "diagnostics: broken" in out
    assert "4 entries became inf" in out
    assert "2 rows made NaN by the computation" in out
    assert "--variant stable" in out  # the hint
    meta = json.loads(run(SEEDS, "--dtype", "float16", "--variant", "naive",
                          "--format", "json").stdout)
    assert meta["diagnostics"]["exp_overflow"] == 4
    assert meta["diagnostics"]["produced_nan_rows"] == 2


def test_axis_reaches_the_math(logits_csv):
    path, x = logits_csv
    got = csv_out(path, "--axis", "0")
    np.testing.assert_allclose(got, exact(x.T).T, rtol=1e-14)
    np.testing.assert_allclose(got.sum(axis=0), 1, rtol=1e-15)
    assert "out of range" in one_line_error(run(path, "--axis", "2", ok=False))


def test_axis_on_3d_npy(tmp_path):
    x = np.random.default_rng(0).normal(0, 3, (2, 3, 4))
    path = tmp_path / "x3.npy"
    np.save(path, x)
    out = tmp_path / "p.npy"
    run(path, "--axis", "1", "-o", out)
    got = np.load(out)
    assert got.shape == x.shape
    want = np.moveaxis(exact(np.moveaxis(x, 1, -1).reshape(-1, 3)).reshape(2, 4, 3), -1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert "1,2" in run(path, "--axis", "1").stdout  # rows labelled by their index


def test_masked_reaches_the_math(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("-inf,-inf\n1,2\n")
    nan = csv_out(path)
    assert np.isnan(nan[0]).all()
    zeros = csv_out(path, "--masked", "zeros")
    np.testing.assert_array_equal(zeros[0], [0, 0])
    np.testing.assert_allclose(zeros[1], exact([1.0, 2.0])[0], rtol=1e-15)
    assert "fully masked rows 1" in run(path).stdout


def test_inf_and_nan_rows(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("1,inf,INF\nnan,1,2\n")
    got = csv_out(path)
    np.testing.assert_array_equal(got[0], [0, 0.5, 0.5])
    assert np.isnan(got[1]).all()
    out = run(path).stdout
    assert "NaN 1" in out and "+inf 2" in out


def test_top_k_rows_digits(logits_csv):
    path, x = logits_csv
    out = run(path, "--top-k", "2").stdout
    assert "#1 class" in out and "#2 class" in out and "#3 class" not in out
    # row 1: class a dominates; its probability is shown
    assert f"{exact(x)[1, 0]:.6g}" in out
    few = run(path, "--rows", "1").stdout
    assert "2 more rows not shown" in few
    assert "more rows not shown" not in run(path).stdout
    p = exact(x)[0, 2]
    assert f"{p:.3g}" in run(path, "--digits", "3").stdout
    assert f"{p:.10g}" in run(path, "--digits", "10").stdout
    assert f"{p:.10g}" not in run(path).stdout


def test_header_names_and_no_header(logits_csv, tmp_path):
    path, x = logits_csv
    out = run(path).stdout
    assert all(name in out for name in ("a", "b", "c", "d"))
    csv = run(path, "--format", "csv").stdout
    assert csv.splitlines()[0] == "a,b,c,d"
    r = run(path, "--no-header", ok=False)
    assert "line 1, column 1" in one_line_error(r)
    numeric = tmp_path / "n.csv"
    numeric.write_text("7,8\n1,2\n")
    assert csv_out(numeric).shape == (2, 2)
    forced = run(numeric, "--header", "--format", "csv").stdout.splitlines()
    assert forced[0] == "7,8" and len(forced) == 2


def test_delimiter_option(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1;2\n3;4\n")
    np.testing.assert_allclose(csv_out(path, "--delimiter", "semicolon"),
                               exact([[1.0, 2.0], [3.0, 4.0]]), rtol=1e-15)
    assert "line 1, column 1" in one_line_error(run(path, "--delimiter", "tab", ok=False))
    r = run(path, "--delimiter", "pipe", ok=False)
    assert r.exit_code == 2 and "--delimiter" in r.stderr


def test_key_option(tmp_path):
    path = tmp_path / "z.npz"
    np.savez(path, a=np.array([[0.0, 1.0]]), b=np.array([[5.0, 1.0, 2.0]]))
    got = csv_out(path, "--key", "b")
    np.testing.assert_allclose(got, exact([[5.0, 1.0, 2.0]]), rtol=1e-15)
    assert "--key" in one_line_error(run(path, ok=False))
    assert "'c'" in one_line_error(run(path, "--key", "c", ok=False))


# ----------------------------------------------------------------------------
# output


@pytest.mark.parametrize("ext", ["npy", "csv", "tsv", "json"])
def test_output_file(logits_csv, tmp_path, ext):
    path, x = logits_csv
    out = tmp_path / f"probs.{ext}"
    r = run(path, "-o", out)
    # the data went to the file: stdout is empty, stderr says what happened
    assert r.stdout == "" and f"wrote {out}" in r.stderr and "smx: diagnostics: ok" in r.stderr
    want = exact(x)
    if ext == "npy":
        got = np.load(out)
    elif ext == "json":
        doc = json.loads(out.read_text())
        assert doc["classes"] == ["a", "b", "c", "d"] and doc["variant"] == "stable"
        got = np.array(doc["values"])
    else:
        text = out.read_text().splitlines()
        sep = "\t" if ext == "tsv" else ","
        assert text[0] == sep.join("abcd")
        got = np.array([[float(v) for v in line.split(sep)] for line in text[1:]])
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_format_option_to_stdout(logits_csv):
    path, x = logits_csv
    tsv = run(path, "--format", "tsv").stdout.splitlines()
    assert tsv[0] == "a\tb\tc\td" and len(tsv) == 4
    npy = np.load(io.BytesIO(run(path, "--format", "npy").stdout_bytes))
    np.testing.assert_allclose(npy, exact(x), rtol=1e-15)
    doc = json.loads(run(path, "--format", "json").stdout)
    assert doc["shape"] == [3, 4] and doc["diagnostics"]["inputs"]["rows"] == 3
    table = run(path, "--format", "table").stdout
    assert "diagnostics" in table


def test_csv_output_is_exact_shortest(tmp_path):
    path = tmp_path / "x.npy"
    x = np.random.default_rng(1).normal(0, 5, (30, 7))
    np.save(path, x)
    got = csv_out(path)
    want = np.load(io.BytesIO(run(path, "--format", "npy").stdout_bytes))
    np.testing.assert_array_equal(got, want)  # every digit needed, none lost


def test_pipeline_from_stdin():
    text = open(SEEDS).read()
    got = csv_out("-", input=text)
    np.testing.assert_allclose(got, exact(np.loadtxt(SEEDS, delimiter=",")), rtol=1e-15)
    x = np.array([[0.0, 1.0, 2.0]], dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    r = run("-", "--format", "npy", input=buf.getvalue())
    got = np.load(io.BytesIO(r.stdout_bytes))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact(x), rtol=1e-7)
    assert "<stdin>" in run("-", input=text).stdout


def test_strict(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,nan\n1,2\n")
    r = run(path, "--strict", "--format", "csv", ok=False)
    assert r.exit_code == 1
    assert "--strict" in r.stderr and "NaN" in r.stderr
    assert run(path, "--format", "csv").exit_code == 0
    assert run(SEEDS, "--strict").exit_code == 0
    r = run(SEEDS, "--strict", "--dtype", "float16", "--variant", "naive", ok=False)
    assert r.exit_code == 1 and "--strict" in r.stderr


# ----------------------------------------------------------------------------
# tables and notes


def test_mnist_table_topk_and_diagnostics():
    out = " ".join(run(MNIST_CSV, "--rows", "5").stdout.split())  # notes may wrap
    assert "digit_0" in out  # class names from the CSV header
    assert "2,495 more rows not shown" in out
    assert "2,500 rows x 10 classes" in out
    assert "argmax" in out and "diagnostics: ok" in out
    assert "…" not in out  # never squeezed to unreadable cells
    top = " ".join(run(MNIST_NPY, "--top-k", "3", "--rows", "4").stdout.split())
    assert "#3 class" in top and "#4 class" not in top
    x = np.load(MNIST_NPY)
    p0 = exact(x[:1])[0]
    assert f"{p0.max():.6g}" in top
    assert "float32 result" in top
    for r in (top, out):
        assert "0 NaN entries" in r and "0 entries became inf" in r


def test_mnist_full_table_on_a_wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = run(MNIST_CSV, "--rows", "2").stdout
    assert all(f"digit_{d}" in out for d in range(10))
    assert "#1 class" not in out


def test_wide_input_switches_to_topk(tmp_path):
    path = tmp_path / "w.npy"
    x = np.random.default_rng(2).normal(0, 1, (3, 40))
    np.save(path, x)
    out = run(path).stdout
    assert "40 classes" in out and "top" in out and "#1 class" in out
    assert str(int(np.argmax(x[0]))) in out
    narrow = run(path, "--top-k", "1").stdout
    assert "#2 class" not in narrow


def test_zero_rows_and_single_value(tmp_path):
    path = tmp_path / "e.npy"
    np.save(path, np.zeros((0, 3)))
    r = run(path)
    assert "no rows" in r.stdout
    assert run(path, "--format", "csv").stdout == ""
    single = tmp_path / "s.csv"
    single.write_text("5\n")
    assert csv_out(single).tolist() == [[1.0]]
    scalar = tmp_path / "0d.npy"
    np.save(scalar, np.float64(3.0))
    # NPY keeps the input's shape: 0-d in, 0-d out; 1-D in, 1-D out
    assert np.load(io.BytesIO(run(scalar, "--format", "npy").stdout_bytes)).shape == ()
    vec = tmp_path / "v.npy"
    np.save(vec, np.array([1.0, 2.0, 3.0]))
    got = np.load(io.BytesIO(run(vec, "--format", "npy").stdout_bytes))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, exact([1.0, 2.0, 3.0])[0], rtol=1e-15)


def test_integer_npy(tmp_path):
    path = tmp_path / "i.npy"
    np.save(path, np.array([[1, 2, 3]], dtype=np.int32))
    np.testing.assert_allclose(csv_out(path), exact([[1, 2, 3]]), rtol=1e-15)


# ----------------------------------------------------------------------------
# errors and exit codes


@pytest.mark.parametrize("content, expect", [
    ("", "no data"),
    ("1,2,3\n4,5\n", "line 2"),
    ("1,2\n3,x\n", "line 2, column 2"),
    ("1e400\n", "overflows"),
])
def test_bad_text_inputs(tmp_path, content, expect):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    out = tmp_path / "out.npy"
    r = run(path, "-o", out, ok=False)
    assert expect in one_line_error(r)
    assert not out.exists()
    assert os.listdir(tmp_path) == ["bad.csv"]


def test_object_npy_refused(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "unpickle" in one_line_error(run(path, ok=False))


def test_missing_file():
    assert "no such file" in one_line_error(run("/nonexistent/x.csv", ok=False))


def test_output_onto_input_refused(logits_csv):
    path, _ = logits_csv
    before = open(path).read()
    assert "input" in one_line_error(run(path, "-o", path, ok=False))
    assert open(path).read() == before


def test_output_into_missing_directory(logits_csv, tmp_path):
    path, _ = logits_csv
    target = tmp_path / "nope" / "p.npy"
    assert "does not exist" in one_line_error(run(path, "-o", target, ok=False))
    assert not (tmp_path / "nope").exists()


def test_output_unknown_extension(logits_csv, tmp_path):
    path, _ = logits_csv
    r = run(path, "-o", tmp_path / "p.bin", ok=False)
    assert r.exit_code == 2  # a usage error, naming the choices
    assert ".bin" in r.stderr and ".npy, .npz, .csv, .tsv, .json" in r.stderr


@pytest.mark.parametrize("args", [
    ["--variant", "fast"], ["--dtype", "float8"], ["--temperature", "0"],
    ["--temperature", "-1"], ["--temperature", "inf"], ["--masked", "ones"],
    ["--rows", "0"], ["--top-k", "0"], ["--digits", "30"], ["--bogus"],
    ["--format", "xml"],
])
def test_usage_errors_exit_2(args):
    r = run(SEEDS, *args, ok=False)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "Error" in r.stderr and "Traceback" not in r.stderr


def test_help_and_version():
    r = CliRunner().invoke(cli, ["softmax", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.stdout and "--temperature" in r.stdout
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "smx" in r.stdout


def test_version_names_the_engine(monkeypatch):
    """--version says which engine computes: the compiled core or the numpy fallback."""
    from smx_cli.core import native

    monkeypatch.delenv("SMX_ENGINE", raising=False)
    r = CliRunner().invoke(cli, ["--version"])
    assert f"engine: {native.engine()}" in r.stdout
    monkeypatch.setenv("SMX_ENGINE", "numpy")
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "engine: numpy" in r.stdout


# ----------------------------------------------------------------------------
# the installed entry points


def _env():
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    env.pop("SMX_DEBUG", None)
    return env


def test_python_m_and_console_script():
    r = subprocess.run([sys.executable, "-m", "smx_cli", "--version"], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 0 and "smx" in r.stdout and "0." in r.stdout
    smx = os.path.join(os.path.dirname(sys.executable), "smx")
    if not os.path.exists(smx):
        pytest.skip("console script not on this interpreter's bin directory")
    r = subprocess.run([smx, "softmax", SEEDS, "--format", "csv"], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 0 and r.stderr == "smx: diagnostics: ok -- 4 rows\n"
    assert r.stdout.splitlines()[2] == "0.0,0.0,1.0"
    r = subprocess.run([smx, "softmax", "/nonexistent.csv"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stdout == ""


@pytest.mark.parametrize("args", [
    [SEEDS],
    [MNIST_NPY, "--rows", "1200"],  # more than a pipe buffer: the write itself fails
    [MNIST_NPY, "--format", "csv"],
])
def test_closed_pipe_is_quiet(args):
    cmd = (f"{sys.executable} -m smx_cli softmax {' '.join(args)} | head -1; "
           "echo \"status=${PIPESTATUS[0]}\"")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=_env(),
                       timeout=60)
    # data on stdout: the one-line diagnostics summary is all stderr holds
    assert r.stderr in ("", "smx: diagnostics: ok -- 2,500 rows\n")
    assert r.stdout.splitlines()[-1] == "status=0"


def test_masked_zeros_row_is_not_an_off_sum_nor_a_hint(tmp_path):
    """A fully masked row's zeros (--masked zeros, --mask) are by design: the
    verdict must not turn "inaccurate", the panel must not suggest the
    --masked zeros the user already gave, and the row has no argmax."""
    path = tmp_path / "m.csv"
    path.write_text("1,2,3\n-inf,-inf,-inf\n")
    doc = json.loads(run(path, "--masked", "zeros", "--format", "json").stdout)
    d = doc["diagnostics"]
    assert d["sum_off_rows"] == 0 and d["max_sum_error"] < 1e-15
    assert d["argmax_counts"] == [{"class": 2, "rows": 1}]
    out = " ".join(run(path, "--masked", "zeros").stdout.split())
    assert "inaccurate" not in out and "--masked zeros gives" not in out
    (tmp_path / "keep.csv").write_text("1,1,1\n0,0,0\n")
    out = " ".join(run(path, "--mask", tmp_path / "keep.csv").stdout.split())
    assert "inaccurate" not in out and "--masked zeros gives" not in out
    # the default (NaN, like PyTorch) still gets the hint
    out = " ".join(run(path).stdout.split())
    assert "--masked zeros gives" in out


def test_topk_rest_mass_of_a_saturated_row_is_not_cancelled(tmp_path):
    """'rest p' is the others' own sum, not 1 - sum(top k) (which gives 0)."""
    path = tmp_path / "s.csv"
    path.write_text("0,40,80\n")
    out = run(path, "--top-k", "1").stdout
    rest = float(np.exp(-40.0) + np.exp(-80.0))  # ~4.25e-18 of the exact softmax
    row = [line.split() for line in out.splitlines() if line.split()[:2] == ["0", "2"]]
    assert row and row[0][-1] == f"{rest:.3g}", out


def test_panel_and_json_name_the_engine(monkeypatch):
    """The diagnostics say which engine computed: JSON always, the panel when the numpy
    kernels ran what the compiled core would take (float64 stable/log)."""
    import json

    from smx_cli.core import native

    monkeypatch.delenv("SMX_ENGINE", raising=False)
    r = CliRunner().invoke(cli, ["softmax", SEEDS, "--format", "json"])
    assert json.loads(r.stdout)["diagnostics"]["engine"] == native.engine()
    r = CliRunner().invoke(cli, ["softmax", SEEDS])
    assert "numpy engine" not in r.stdout or not native.available()
    monkeypatch.setenv("SMX_ENGINE", "numpy")
    r = CliRunner().invoke(cli, ["softmax", SEEDS, "--format", "json"])
    assert json.loads(r.stdout)["diagnostics"]["engine"] == "numpy"
    r = CliRunner().invoke(cli, ["softmax", SEEDS])
    assert "numpy engine" in r.stdout
