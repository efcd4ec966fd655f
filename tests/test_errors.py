"""The error contract, end to end: every bad input and fault gives the documented
exit code and one line on stderr naming what, where and what to do; outputs are
written atomically; Ctrl-C, SIGTERM and SIGKILL never leave a half-written file.

CLI-level tests use click's CliRunner; what only the console script does
(one-line usage errors, exit 130 on SIGINT, a closed pipe, a kill during a
write) runs ``python -m smx_cli`` in a subprocess.
"""
from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from smx_cli import io as smx_io
from smx_cli.cli import cli, main
from smx_cli.errors import SmxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
SEEDS = os.path.join(SAMPLES, "seeds.csv")
MNIST_NPY = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
MNIST_LABELS = os.path.join(SAMPLES, "mnist_lenet_labels.npy")


# ----------------------------------------------------------------------------
# helpers


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def ok(*args, input=None):
    r = invoke(*args, input=input)
    assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
    return r


def fails(*args, code=1, input=None) -> str:
    """Run, expect exit ``code`` with exactly one ``Error:`` line on stderr; return it."""
    r = invoke(*args, input=input)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    # an uncaught exception would show here as something other than SystemExit
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.splitlines()
    if code == 2:  # CliRunner runs click's standalone mode: usage block + one Error line
        lines = [ln for ln in lines if ln.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def write(tmp_path, name, data) -> str:
    p = tmp_path / name
    if isinstance(data, str):
        data = data.encode()
    p.write_bytes(data)
    return str(p)


def npy_bytes(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def env():
    e = dict(os.environ)
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TERM", "CLICOLOR_FORCE", "SMX_DEBUG"):
        e.pop(var, None)
    e.update(NO_COLOR="1", COLUMNS="100", PYTHONPATH=ROOT)
    return e


def smx_proc(*args, **kw):
    return subprocess.run([sys.executable, "-m", "smx_cli", *map(str, args)],
                          capture_output=True, env=env(), timeout=120, **kw)


def csv_rows(out: str) -> np.ndarray:
    return np.array([[float(t) for t in ln.split(",")] for ln in out.splitlines() if ln])


# ----------------------------------------------------------------------------
# the contract itself


def test_help_documents_exit_codes_and_one_line_errors():
    out = ok("--help").output
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"  {code}" in out
    assert "one line on stderr" in out and "atomically" in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_usage_error_is_one_line_with_exit_2(monkeypatch, capsys):
    """Through the console entry point: one line, and where to read more."""
    # `smx softmax` with no FILE reads stdin unless stdin is a terminal
    monkeypatch.setattr(sys, "stdin", _Terminal())
    for args in (["softmax", SEEDS, "--bogus"], ["softmax"], ["softmax", SEEDS, "-t", "0"],
                 ["softmax", SEEDS, "--delimiter", "pipe"], ["nosuchcommand"],
                 ["xent", SEEDS]):
        monkeypatch.setattr(sys, "argv", ["smx", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("Error: ") and "--help" in err, err


def test_data_error_through_main_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["smx", "softmax", "/nonexistent/x.csv"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err == "Error: /nonexistent/x.csv: no such file; check the name (or give - for stdin)\n"


def test_internal_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("something\nunexpected")
    monkeypatch.setattr(smx_io.arrays, "read_text", boom)
    monkeypatch.delenv("SMX_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["smx", "softmax", SEEDS])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something unexpected" in err
    assert "Traceback" not in err


def test_numpy_warnings_do_not_reach_stderr(tmp_path):
    """A signalling NaN makes numpy warn when cast; stderr stays clean (exit 0)."""
    snan = np.frombuffer(bytes.fromhex("0100807f") * 6, dtype="<f4").reshape(2, 3)
    p = write(tmp_path, "snan.npy", npy_bytes(snan))
    r = smx_proc("softmax", p, "--format", "csv")
    # no warning; only the one-line diagnostics summary beside the data
    assert r.returncode == 0 and r.stderr.startswith(b"smx: diagnostics: ")
    assert r.stderr.count(b"\n") == 1
    assert r.stdout.decode().splitlines() == ["nan,nan,nan"] * 2


def test_strict_exit_codes(tmp_path):
    nan = write(tmp_path, "nan.csv", "1,nan\n2,3\n")
    fine = write(tmp_path, "fine.csv", "1,2\n2,3\n")
    ok("softmax", nan, "--format", "csv")  # reported, exit 0 without --strict
    ok("softmax", fine, "--strict", "--format", "csv")
    assert "NaN" in fails("softmax", nan, "--strict", "--format", "csv")
    ovf = write(tmp_path, "ovf.csv", "1000,0\n")
    assert "--strict" in fails("softmax", ovf, "--strict", "--dtype", "float16",
                               "--variant", "naive", "--format", "csv")
    labels = write(tmp_path, "y.csv", "0\n1\n")
    ok("xent", fine, "--labels", labels, "--strict", "--format", "csv")
    assert "--strict" in fails("xent", nan, "--labels", labels, "--strict", "--format", "csv")


# ----------------------------------------------------------------------------
# files


def test_missing_file():
    msg = fails("softmax", "/nonexistent/logits.csv")
    assert "/nonexistent/logits.csv: no such file" in msg and "check" in msg


def test_directory(tmp_path):
    msg = fails("softmax", str(tmp_path))
    assert "is a directory" in msg and "give a file" in msg


def test_device_is_refused_not_read_forever():
    assert "is a device" in fails("softmax", "/dev/zero")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_file_chmod(tmp_path):
    p = write(tmp_path, "locked.csv", "1,2\n")
    os.chmod(p, 0)
    try:
        assert "permission denied" in fails("softmax", p)
    finally:
        os.chmod(p, 0o644)


def test_unreadable_file_message(tmp_path, monkeypatch):
    """Root bypasses permissions, so the PermissionError open() raises is simulated."""
    p = write(tmp_path, "locked.csv", "1,2\n")
    real_open = open

    def guarded(path, *a, **k):
        if str(path) == p:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **k)
    monkeypatch.setattr("builtins.open", guarded)
    msg = fails("softmax", p)
    assert f"{p}: permission denied" in msg and "permissions" in msg


@pytest.mark.parametrize("text, what", [
    ("", "no data"),
    ("\n\n  \n", "no data"),
    ("# a comment\n# another\n", "no data"),
    ("cat,dog,bird\n", "only a header row"),
    ("cat,dog\n# nothing else\n", "only a header row"),
])
def test_empty_header_only_comments_only(tmp_path, text, what):
    msg = fails("softmax", write(tmp_path, "e.csv", text))
    assert what in msg and "e.csv" in msg


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbf1,2,3\n1,2,5\n",      # UTF-8 BOM
    b"1,2,3\r\n1,2,5\r\n",              # CRLF
    b"1,2,3,\n1,2,5,\n",                # trailing delimiter
    b"\xef\xbb\xbf1,2,3,\r\n1,2,5,\r\n",  # all three
    b"1\t2\t3\n1\t2\t5\n",              # TSV
])
def test_bom_crlf_trailing_delimiter_read_as_plain_csv(tmp_path, data):
    r = ok("softmax", write(tmp_path, "x.csv", data), "--format", "csv")
    got = csv_rows(r.stdout)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got[0], [0.09003057317038046, 0.24472847105479767,
                                        0.6652409557748219], rtol=1e-15)


def test_bom_with_header(tmp_path):
    r = ok("softmax", write(tmp_path, "h.csv", b"\xef\xbb\xbfcat,dog\r\n0,0\r\n"), "--format",
           "csv")
    assert r.stdout.splitlines()[0] == "cat,dog"  # the BOM is not part of the first name


def test_ragged_rows(tmp_path):
    msg = fails("softmax", write(tmp_path, "r.csv", "1,2,3\n4,5,6\n7,8\n"))
    assert "line 3 has 2 values, expected 3" in msg and "ragged" in msg


def test_ragged_against_header(tmp_path):
    msg = fails("softmax", write(tmp_path, "r.csv", "a,b,c\n1,2,3\n4,5,6,7\n"))
    assert "line 3 has 4 values" in msg and "header" in msg


@pytest.mark.parametrize("text, where, token", [
    ("1,2,3\n4,x,6\n", "line 2, column 2", "'x'"),
    ("1,2,3\n# note\n4,5,six\n", "line 3, column 3", "'six'"),
    ("1,2,3\n4,,6\n", "line 2, column 2", "empty value"),
    ("1;2;3\n4;5,5;6\n", "line 2, column 2", "decimal comma"),
    ("1,2,3\n4,0x10,6\n", "line 2, column 2", "'0x10'"),
])
def test_non_numeric_token_line_and_column(tmp_path, text, where, token):
    msg = fails("softmax", write(tmp_path, "n.csv", text))
    assert where in msg and token in msg


def test_number_overflowing_float64(tmp_path):
    msg = fails("softmax", write(tmp_path, "o.csv", "1,2\n3,1e400\n"))
    assert "line 2, column 2" in msg and "'1e400' overflows float64" in msg and "inf" in msg
    msg = fails("softmax", write(tmp_path, "o.csv", "-1e400,2\n"))
    assert "line 1, column 1" in msg and "overflows" in msg
    # written inf is meant: accepted
    ok("softmax", write(tmp_path, "i.csv", "inf,2\n-Infinity,3\n"), "--format", "csv")


def test_one_column_and_single_value(tmp_path):
    r = ok("softmax", write(tmp_path, "c.csv", "1\n2\n3\n"), "--format", "csv")
    assert r.stdout.splitlines() == ["1.0", "1.0", "1.0"]  # N rows of one class
    r = ok("softmax", write(tmp_path, "s.csv", "42\n"), "--format", "csv")
    assert r.stdout == "1.0\n"
    r = ok("softmax", write(tmp_path, "c.csv", "1\n2\n3\n"), "--axis", "0", "--format", "csv")
    np.testing.assert_allclose(csv_rows(r.stdout).ravel(), [0.09003057, 0.24472847, 0.66524096],
                               rtol=1e-7)


def test_binary_garbage_is_not_text(tmp_path):
    msg = fails("softmax", write(tmp_path, "g.csv", b"\x00\xff\xfe\x80garbage"))
    assert "UTF-8" in msg or "NUL" in msg


# ----------------------------------------------------------------------------
# NPY / NPZ


class _Planted:
    """Unpickling this writes a marker file: proof that a payload ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_npy_is_refused_and_never_executed(tmp_path):
    marker = str(tmp_path / "PWNED")
    data = npy_bytes(np.array([_Planted(marker), 1.0], dtype=object), allow_pickle=True)
    assert b"PWNED" in data  # the file really carries the payload
    # sanity: loading it the unsafe way does run it
    np.load(io.BytesIO(data), allow_pickle=True)
    assert os.path.exists(marker)
    os.unlink(marker)
    path = write(tmp_path, "evil.npy", data)
    msg = fails("softmax", path)
    assert "Python objects" in msg and "never unpickles" in msg
    msg = fails("xent", SEEDS, "--labels", path)
    assert "never unpickles" in msg
    assert not os.path.exists(marker)


def test_pickled_npz_is_refused_and_never_executed(tmp_path):
    marker = str(tmp_path / "PWNED")
    buf = io.BytesIO()
    np.savez(buf, logits=np.array([_Planted(marker)], dtype=object))
    msg = fails("softmax", write(tmp_path, "evil.npz", buf.getvalue()))
    assert "Python objects" in msg and "evil.npz[logits]" in msg
    assert not os.path.exists(marker)


def test_raw_pickle_file_is_not_loaded(tmp_path):
    marker = str(tmp_path / "PWNED")
    msg = fails("softmax", write(tmp_path, "p.npy", pickle.dumps(_Planted(marker))))
    assert "UTF-8" in msg or "NUL" in msg or "is a pickle" in msg  # refused, never unpickled
    assert not os.path.exists(marker)


@pytest.mark.parametrize("arr, what", [
    (np.array([[1 + 2j, 3j]]), "complex numbers"),
    (np.array([[True, False]]), "booleans"),
    (np.array([["a", "b"]]), "strings"),
    (np.array([[b"a", b"b"]]), "bytes"),
    (np.array(["2024-01-01"], dtype="datetime64[D]"), "dates"),
    (np.zeros(2, dtype=[("a", "f8"), ("b", "f8")]), "raw records"),
])
def test_npy_non_real_dtypes(tmp_path, arr, what):
    msg = fails("softmax", write(tmp_path, "x.npy", npy_bytes(arr)))
    assert what in msg and "x.npy" in msg and "astype" in msg


def test_npy_0d_is_one_row_of_one_class(tmp_path):
    p = write(tmp_path, "z.npy", npy_bytes(np.array(3.5)))
    assert ok("softmax", p, "--format", "csv").stdout == "1.0\n"
    out = tmp_path / "z_out.npy"
    ok("softmax", p, "-o", out)
    got = np.load(out)
    assert got.shape == () and got == 1.0


def test_npy_3d_class_axis_and_flattened_rows(tmp_path):
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    p = write(tmp_path, "x3.npy", npy_bytes(x))
    # the class axis is the last; the others are flattened into rows (C order)
    got = csv_rows(ok("softmax", p, "--format", "csv").stdout)
    ref = np.exp(x - x.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, ref.reshape(6, 4), rtol=1e-14)
    # --axis 1: classes along axis 1, rows are moveaxis(x, 1, -1).reshape(-1, 3)
    got = csv_rows(ok("softmax", p, "--axis", "1", "--format", "csv").stdout)
    m = np.moveaxis(x, 1, -1).reshape(-1, 3)
    ref = np.exp(m - m.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    # NPY keeps the shape
    out = tmp_path / "o.npy"
    ok("softmax", p, "--axis", "1", "-o", out)
    assert np.load(out).shape == (2, 3, 4)
    np.testing.assert_allclose(np.load(out).sum(axis=1), 1.0, rtol=1e-15)
    # an axis the array does not have: say which are valid
    msg = fails("softmax", p, "--axis", "3")
    assert "between -3 and 2" in msg
    # xent takes N-d logits (issue 16): labels of the wrong shape are named
    msg = fails("xent", p, "--labels", write(tmp_path, "y.csv", "0\n1\n"))
    assert "shape (2,)" in msg and "(2, 3, 4)" in msg and "shape (2, 3)" in msg


def test_npy_truncated(tmp_path):
    data = npy_bytes(np.arange(100.0).reshape(10, 10))
    msg = fails("softmax", write(tmp_path, "t.npy", data[:-8]))
    assert "truncated NPY" in msg and "(10, 10)" in msg and "792 bytes" in msg
    msg = fails("softmax", write(tmp_path, "h.npy", data[:30]))
    assert "not a valid NPY header" in msg


def test_npy_header_shape_not_matching_size(tmp_path):
    data = npy_bytes(np.arange(12.0).reshape(3, 4))
    msg = fails("softmax", write(tmp_path, "long.npy", data + b"\0" * 16))
    assert "damaged NPY" in msg and "(3, 4)" in msg and "112 bytes" in msg
    # a header claiming an enormous shape fails from the size check, without allocating
    hdr = data.replace(b"(3, 4)", b"(999999999999, 999999999999)".ljust(6))
    fixed = hdr[:8] + (int.from_bytes(data[8:10], "little") + len(hdr) - len(data)).to_bytes(
        2, "little") + hdr[10:]
    msg = fails("softmax", write(tmp_path, "huge.npy", fixed))
    assert "truncated NPY" in msg or "NPY header" in msg


def test_npz_key_missing_and_ambiguous(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((2, 3)), b=np.ones((2, 3)))
    p = write(tmp_path, "two.npz", buf.getvalue())
    msg = fails("softmax", p)
    assert "2 arrays (a, b)" in msg and "--key" in msg
    msg = fails("softmax", p, "--key", "logits")
    assert "no array 'logits'" in msg and "a, b" in msg and "--key" in msg
    ok("softmax", p, "--key", "b", "--format", "csv")


def test_npz_truncated_and_damaged(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, logits=np.arange(200.0).reshape(20, 10))
    data = buf.getvalue()
    assert "NPZ" in fails("softmax", write(tmp_path, "t.npz", data[: len(data) // 2]))
    assert "NPZ" in fails("softmax", write(tmp_path, "g.npz", b"PK\x03\x04" + b"\0" * 50))
    # a member whose NPY header disagrees with its size
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("logits.npy", npy_bytes(np.arange(12.0).reshape(3, 4))[:-8])
    msg = fails("softmax", write(tmp_path, "m.npz", bad.getvalue()))
    assert "truncated NPZ member" in msg and "m.npz[logits]" in msg
    # a member that is no NPY at all
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("logits.npy", b"hello")
    assert "not an NPY array" in fails("softmax", write(tmp_path, "n.npz", bad.getvalue()))


def test_npy_byte_orders_and_fortran(tmp_path):
    x = np.arange(6.0).reshape(2, 3)
    for arr in (x.astype(">f8"), np.asfortranarray(x), x.astype("<f4")):
        p = write(tmp_path, "x.npy", npy_bytes(arr))
        got = csv_rows(ok("softmax", p, "--format", "csv").stdout)
        np.testing.assert_allclose(got[1], [0.09003057, 0.24472847, 0.66524096], rtol=1e-7)


# ----------------------------------------------------------------------------
# labels and weights for xent


@pytest.fixture
def logits(tmp_path):
    return write(tmp_path, "logits.csv", "cat,dog,bird\n1,2,3\n3,2,1\n0,0,0\n")


@pytest.mark.parametrize("labels, expect", [
    ("0\n1\n", "2 labels for 3 rows"),
    ("0\n1\n2\n0\n", "4 labels for 3 rows"),
    ("0\n1\n3\n", "label 2 is 3, outside [0, 3)"),
    ("0\n-1\n2\n", "label 1 is -1"),
    ("0\n1.5\n2\n", "label 1 is 1.5, not an integer"),
    ("0\nnan\n2\n", "label 1 is nan"),
    ("cat\ndog\nfish\n", "label 'fish' is neither a number nor a class name"),
    ("0.2,0.8\n0.5,0.5\n1,0\n", "shape (3, 2)"),
    ("0.2,0.3,0.4\n0.5,0.5,0\n1,0,0\n", "sums to 0.9"),
    ("", "no labels"),
    ("# none\n", "no labels"),
    ("label\n", "only a header"),
    ("0\n1,2\n2\n", "line 2 has 2 values"),
])
def test_label_mismatches(tmp_path, logits, labels, expect):
    msg = fails("xent", logits, "--labels", write(tmp_path, "y.csv", labels))
    assert expect in msg, msg
    assert "y.csv" in msg


def test_labels_npy_mismatches(tmp_path, logits):
    for arr, expect in [(np.array([0, 1]), "2 labels for 3 rows"),
                        (np.array([0, 1, 7]), "outside [0, 3)"),
                        (np.array(1), "shape ()"),
                        (np.zeros((3, 3, 1)), "shape (3, 3, 1)"),
                        (np.array([0.0, 1.0, 2.5]), "not an integer"),
                        (np.array([1 + 0j, 0, 0]), "complex")]:
        msg = fails("xent", logits, "--labels", write(tmp_path, "y.npy", npy_bytes(arr)))
        assert expect in msg, (arr, msg)


def test_labels_missing_file_and_label_column(tmp_path, logits):
    assert "no such file" in fails("xent", logits, "--labels", tmp_path / "nope.csv")
    msg = fails("xent", logits, "--label-column", "horse")
    assert "no label column 'horse'" in msg and "cat, dog, bird" in msg
    assert "out of range" in fails("xent", write(tmp_path, "n.csv", "1,2,0\n3,4,1\n"),
                                   "--label-column", "5")
    assert "exactly one" in fails("xent", logits, code=2)
    assert "exactly one" in fails("xent", logits, "--labels", "x", "--label-column", "0",
                                  code=2)
    assert "cannot both be -" in fails("xent", "-", "--labels", "-", code=2)


@pytest.mark.parametrize("weight, expect", [
    ("1,2", "--weight: 2 class weights for 3 classes"),
    ("1,2,3,4", "4 class weights for 3 classes"),
    ("1,-2,3", "weight 1 is -2.0"),
    ("1,nan,3", "weight 1 is nan"),
    ("1,inf,3", "weight 1 is inf"),
    ("1,x,3", "not a comma-separated list"),
    ("/nonexistent/w.csv", "no such file"),
])
def test_weight_mismatches(tmp_path, logits, weight, expect):
    msg = fails("xent", logits, "--labels", write(tmp_path, "y.csv", "0\n1\n2\n"),
                "--weight", weight)
    assert expect in msg, msg


def test_weight_file_mismatch(tmp_path, logits):
    w = write(tmp_path, "w.npy", npy_bytes(np.array([1.0, 2.0])))
    msg = fails("xent", logits, "--labels", write(tmp_path, "y.csv", "0\n1\n2\n"), "--weight", w)
    assert "w.npy: 2 class weights for 3 classes" in msg


# ----------------------------------------------------------------------------
# output


def test_output_onto_input_is_refused(tmp_path):
    p = write(tmp_path, "x.csv", "1,2,3\n")
    msg = fails("softmax", p, "-o", p)
    assert "refusing to overwrite the input file" in msg
    assert open(p).read() == "1,2,3\n"
    # the same file under another name
    os.link(p, tmp_path / "alias.csv")
    assert "refusing" in fails("softmax", p, "-o", tmp_path / "alias.csv")
    y = write(tmp_path, "y.csv", "0\n")
    assert "refusing" in fails("xent", p, "--labels", y, "-o", y)
    assert "refusing" in fails("xent", p, "--labels", y, "--grad-out", p)
    assert "refusing" in fails("compare-stability", p, "-o", p)
    assert open(y).read() == "0\n"


def test_output_into_missing_directory(tmp_path):
    msg = fails("softmax", SEEDS, "-o", tmp_path / "nope" / "out.csv")
    assert "directory" in msg and "does not exist" in msg and "create it" in msg
    f = write(tmp_path, "afile", "x")
    msg = fails("softmax", SEEDS, "-o", os.path.join(f, "out.csv"))
    assert "is not a directory" in msg


def test_output_to_unwritable_place(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(smx_io.write, "_create_temp", denied)
    msg = fails("softmax", SEEDS, "-o", tmp_path / "out.csv")
    assert "cannot write in" in msg and "Permission denied" in msg and "another -o" in msg
    assert os.listdir(tmp_path) == []


def test_output_to_read_only_filesystem():
    try:  # /sys is read-only in most containers, even for root
        with open("/sys/.smx-probe", "w"):
            pass
    except OSError:
        pass
    else:
        os.unlink("/sys/.smx-probe")
        pytest.skip("/sys is writable here")
    msg = fails("softmax", SEEDS, "-o", "/sys/out.csv")
    assert "/sys/out.csv: cannot write in /sys" in msg


def test_output_to_device_is_refused():
    msg = fails("softmax", SEEDS, "-o", "/dev/null", "--format", "csv")
    assert "not a regular file" in msg
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_output_full_disk_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def full(fh, data, chunk=0):
        fh.write(bytes(data[:10]))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(smx_io, "write_chunks", full)
    msg = fails("softmax", SEEDS, "-o", target)
    assert "No space left on device" in msg and "nothing was written" in msg
    assert os.listdir(tmp_path) == ["out.csv"] and target.read_text() == "old\n"


def test_existing_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    before = os.stat(target).st_ino
    ok("softmax", SEEDS, "-o", target)
    assert os.stat(target).st_ino != before  # a new file renamed over, not rewritten in place
    assert (os.stat(target).st_mode & 0o777) == 0o640  # the old file's mode is kept
    assert target.read_text().splitlines()[2] == "0.0,0.0,1.0"
    assert os.listdir(tmp_path) == ["out.csv"]
    # a failing run leaves the old file untouched
    fails("softmax", write(tmp_path, "bad.csv", "1,x\n"), "-o", target)
    assert target.read_text().splitlines()[2] == "0.0,0.0,1.0"


def test_new_output_gets_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        ok("softmax", SEEDS, "-o", tmp_path / "new.npy")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "new.npy").st_mode & 0o777) == 0o644


def test_interrupt_mid_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")

    def interrupted(fh, data, chunk=0):
        fh.write(bytes(data[: len(data) // 2]))
        raise KeyboardInterrupt
    monkeypatch.setattr(smx_io, "write_chunks", interrupted)
    r = invoke("softmax", MNIST_NPY, "-o", target)
    assert r.exit_code != 0
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.npy"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    """A leftover temporary file (our name, hash tag included, no lock held) is
    removed; a file with a look-alike name is not (tests/test_hostile.py: locked ones)."""
    fd, stale = smx_io.write._create_temp(str(tmp_path))  # noqa: SLF001
    os.write(fd, b"half")
    os.close(fd)  # closing drops the lock, as a SIGKILL does
    other = tmp_path / ".smx-notours.part"
    other.write_bytes(b"")
    ok("softmax", SEEDS, "-o", tmp_path / "out.csv")
    assert sorted(os.listdir(tmp_path)) == sorted(["out.csv", other.name])
    assert not os.path.exists(stale)


def test_stdout_write_error_is_one_line(tmp_path):
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "smx_cli", "softmax", SEEDS, "--format", "csv"],
                           stdout=full, stderr=subprocess.PIPE, env=env(), timeout=60)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "No space left on device" in err


# ----------------------------------------------------------------------------
# the console script: closed pipes, signals


@pytest.mark.parametrize("args", [
    ["softmax", MNIST_NPY, "--format", "csv"],
    ["softmax", MNIST_NPY, "--rows", "2000"],
    ["xent", MNIST_NPY, "--labels", MNIST_LABELS, "--format", "csv"],
    ["xent", MNIST_NPY, "--labels", MNIST_LABELS, "--rows", "2000"],
    ["compare-stability", "--format", "json"],
    ["compare-stability"],
])
def test_closed_stdout_exits_quietly(args):
    p = subprocess.Popen([sys.executable, "-m", "smx_cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env())
    first = p.stdout.readline()
    p.stdout.close()  # what `| head -1` does
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0
    # nothing but (maybe) the one-line diagnostics summary that goes beside data
    assert first and all(ln.startswith((b"smx: diagnostics: ", b"smx: xent: "))
                         for ln in err.splitlines())


def test_sigint_during_compute_exits_130(tmp_path):
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(1).standard_normal((2_000_000, 10)))
    p = subprocess.Popen([sys.executable, "-m", "smx_cli", "softmax", str(big), "-o",
                          str(tmp_path / "out.npy")], stderr=subprocess.PIPE, env=env())
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    if rc == 0:
        pytest.skip("finished before the signal arrived")
    # click ends the terminal's "^C" line first, hence the leading newline
    lines = err.strip().splitlines()
    assert rc == 130 and lines[-1] == "smx: interrupted" and "Traceback" not in err, (rc, err)
    left = sorted(os.listdir(tmp_path))
    if left == ["big.npy", "out.npy"]:
        # the signal landed after the output was renamed into place (under load: while
        # the diagnostics were said, after "wrote out.npy"): it is complete
        assert np.load(tmp_path / "out.npy").shape == (2_000_000, 10)
    else:
        assert left == ["big.npy"]
        assert lines == ["smx: interrupted"]  # nothing written, nothing else said


# --- a kill during a large write --------------------------------------------------

BIG_ROWS, BIG_COLS = 300_000, 125  # 300 MB of float64 in, 300 MB out


@pytest.fixture(scope="module")
def big_npy(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    path = d / "big.npy"
    x = np.random.default_rng(0).standard_normal((BIG_ROWS, BIG_COLS))
    np.save(path, x)
    return str(path)


def _temp_fd(pid: int, outdir: str):
    """(fd, path) of the process's open ``.smx-*.part`` file in ``outdir``, or None."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(os.path.join(outdir, ".smx-")) and target.endswith(".part"):
            return fd, target
    return None


def _kill_mid_write(big: str, out: str, sig: int) -> tuple[int, int, int]:
    """Start writing ``out``, signal when 0 < bytes written < total; return
    (exit status, bytes written when signalled, total bytes)."""
    total = BIG_ROWS * BIG_COLS * 8 + 128
    outdir = os.path.dirname(out)
    p = subprocess.Popen([sys.executable, "-m", "smx_cli", "softmax", big, "--variant", "lse",
                          "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env())
    pos = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and p.poll() is None:
            found = _temp_fd(p.pid, outdir)
            if found:
                try:
                    with open(f"/proc/{p.pid}/fdinfo/{found[0]}") as fh:
                        pos = int(fh.readline().split()[1])
                except (OSError, ValueError, IndexError):
                    pos = 0
                if 0 < pos < total:
                    p.send_signal(sig)
                    break
            time.sleep(0.0005)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return rc, pos, total


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_write_leaves_old_file(big_npy, tmp_path, sig, code):
    out = tmp_path / "out.npy"
    np.save(out, np.arange(3.0))
    old = out.read_bytes()
    rc, pos, total = _kill_mid_write(big_npy, str(out), sig)
    assert 0 < pos < total, "the signal did not land during the write"
    assert os.listdir(tmp_path) == ["out.npy"]  # no temporary file left
    if rc == 0:
        # on a loaded machine the signal can be handled only after the last block was
        # written and renamed: then the new file must be whole
        assert np.load(out).shape == (BIG_ROWS, BIG_COLS)
        return
    assert rc == code
    assert out.read_bytes() == old  # the old file, whole


def test_sigint_mid_write_without_old_file_leaves_nothing(big_npy, tmp_path):
    rc, pos, total = _kill_mid_write(big_npy, str(tmp_path / "out.npy"), signal.SIGINT)
    assert 0 < pos < total
    if rc == 0:  # handled after the rename (see above): the file must be whole
        assert np.load(tmp_path / "out.npy").shape == (BIG_ROWS, BIG_COLS)
        return
    assert rc == 130 and os.listdir(tmp_path) == []


def test_sigkill_mid_write(big_npy, tmp_path):
    """SIGKILL cannot be caught: the old file survives; the only residue is the
    ``.smx-<pid>-*.part`` temporary file, and the next write there removes it."""
    out = tmp_path / "out.npy"
    np.save(out, np.arange(3.0))
    old = out.read_bytes()
    rc, pos, total = _kill_mid_write(big_npy, str(out), signal.SIGKILL)
    assert 0 < pos < total and rc == -signal.SIGKILL
    assert out.read_bytes() == old
    residue = sorted(set(os.listdir(tmp_path)) - {"out.npy"})
    assert all(smx_io.is_temp_name(n) for n in residue), residue
    ok("softmax", SEEDS, "-o", tmp_path / "next.csv")
    assert sorted(os.listdir(tmp_path)) == ["next.csv", "out.npy"]
    np.testing.assert_array_equal(np.load(out), np.arange(3.0))


def test_smx_error_is_a_click_exception_with_exit_1():
    e = SmxError("a\nb   c")
    assert e.exit_code == 1 and e.message == "a b c"
