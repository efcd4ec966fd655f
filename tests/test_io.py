"""Reading logits (CSV/TSV/NPY/NPZ/stdin) and writing results."""
from __future__ import annotations

import io
import json
import os
import sys

import ml_dtypes
import numpy as np
import pytest

from smx_cli.errors import SmxError
from smx_cli.io import (atomic_output, csv_text, json_document, npy_bytes, output_format,
                        parse_text, read_array, shortest_strings)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def npy(arr, **kw):
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def error_of(fn, *args, **kw) -> str:
    with pytest.raises(SmxError) as info:
        fn(*args, **kw)
    msg = info.value.message
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------
# CSV / TSV text


@pytest.mark.parametrize("text", [
    "1,2,3\n4,5,6\n",
    "1\t2\t3\n4\t5\t6\n",
    "1;2;3\n4;5;6\n",
    "1 2 3\n4   5\t6\n",
    "  1, 2 ,3\n4,5,6\n",
])
def test_delimiter_sniffing(tmp_path, text):
    loaded = read_array(write(tmp_path, "x.txt", text))
    np.testing.assert_array_equal(loaded.values, [[1, 2, 3], [4, 5, 6]])
    assert loaded.values.dtype == np.float64 and loaded.fmt == "csv"


def test_forced_delimiter(tmp_path):
    path = write(tmp_path, "x.csv", "1;2,5\n3;4,6\n")
    # sniffed: the semicolon wins; '2,5' is then a decimal comma, reported
    assert "decimal comma" in error_of(read_array, path)
    msg = error_of(read_array, path, delimiter=",")
    assert "line 1, column 1" in msg and "'1;2'" in msg
    semi = write(tmp_path, "y.csv", "1;2;3\n4;5;6\n")
    assert read_array(semi, delimiter=";").values.shape == (2, 3)
    assert "'1;2;3'" in error_of(read_array, semi, delimiter=",")
    assert "delimiter" in error_of(read_array, write(tmp_path, "z.csv", "1|2\n"), delimiter="|")
    tab = read_array(write(tmp_path, "t.tsv", "a b\tc\n1\t2\n"), delimiter="\t")
    assert tab.class_names == ["a b", "c"]


def test_header_auto_and_forced(tmp_path):
    path = write(tmp_path, "h.csv", "cat,dog,bird\n1,2,3\n")
    loaded = read_array(path)
    assert loaded.class_names == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(loaded.values, [[1, 2, 3]])
    # numeric names are only a header when asked
    numeric = write(tmp_path, "n.csv", "10,20\n1,2\n")
    assert read_array(numeric).class_names is None
    assert read_array(numeric).values.shape == (2, 2)
    forced = read_array(numeric, header=True)
    assert forced.class_names == ["10", "20"] and forced.values.tolist() == [[1, 2]]
    msg = error_of(read_array, path, header=False)
    assert "line 1, column 1" in msg and "'cat'" in msg
    quoted = read_array(write(tmp_path, "q.csv", '"a","b"\n1,2\n'))
    assert quoted.class_names == ["a", "b"]


def test_comments_bom_crlf_trailing_delimiter(tmp_path):
    text = "\ufeff# logits\r\nx,y # names\r\n\r\n1,2,\r\n# middle\r\n3,4,\r\n"
    loaded = read_array(write(tmp_path, "c.csv", text))
    assert loaded.class_names == ["x", "y"]
    np.testing.assert_array_equal(loaded.values, [[1, 2], [3, 4]])


def test_special_tokens_any_case(tmp_path):
    text = "nan,NaN,NAN,inf,INF,+inf,-inf,-Infinity,infinity,+Inf\n"
    v = read_array(write(tmp_path, "s.csv", text)).values[0]
    assert np.isnan(v[:3]).all()
    np.testing.assert_array_equal(v[3:], [np.inf, np.inf, np.inf, -np.inf, -np.inf,
                                          np.inf, np.inf])


def test_ragged_row_names_the_line(tmp_path):
    msg = error_of(read_array, write(tmp_path, "r.csv", "# c\n1,2,3\n4,5,6\n7,8\n"))
    assert "line 4" in msg and "2 values" in msg and "expected 3" in msg
    msg = error_of(read_array, write(tmp_path, "r2.csv", "1,2\n3\n"))
    assert "line 2" in msg


def test_non_numeric_token_names_line_and_column(tmp_path):
    msg = error_of(read_array, write(tmp_path, "b.csv", "1,2,3\n4,abc,6\n"))
    assert msg.startswith(str(tmp_path / "b.csv"))
    assert "line 2, column 2" in msg and "'abc'" in msg
    msg = error_of(read_array, write(tmp_path, "e.csv", "1,2,3\n4,,6\n"))
    assert "line 2, column 2" in msg and "empty" in msg
    msg = error_of(read_array, write(tmp_path, "m.csv", "1,oops\n2,3\n"))
    assert "line 1, column 2" in msg  # a mixed first row is data, not a header
    for token in ("1_000", "0x10", "１"):
        msg = error_of(read_array, write(tmp_path, "t.csv", f"1,{token}\n"))
        assert "column 2" in msg


def test_overflowing_number_is_an_error(tmp_path):
    msg = error_of(read_array, write(tmp_path, "o.csv", "1,2\n3,1e400\n"))
    assert "line 2, column 2" in msg and "1e400" in msg and "overflow" in msg
    msg = error_of(read_array, write(tmp_path, "o2.csv", "-1e999\n"))
    assert "line 1, column 1" in msg


@pytest.mark.parametrize("text, what", [
    ("", "no data"),
    ("\n\n  \n", "no data"),
    ("# only\n# comments\n", "no data"),
    ("a,b,c\n", "only a header"),
])
def test_empty_inputs(tmp_path, text, what):
    assert what in error_of(read_array, write(tmp_path, "e.csv", text))


def test_one_column_and_single_value(tmp_path):
    col = read_array(write(tmp_path, "c.csv", "1\n2\n3\n"))
    assert col.values.shape == (3, 1)
    named = read_array(write(tmp_path, "n.csv", "score\n1\n2\n"))
    assert named.class_names == ["score"] and named.values.shape == (2, 1)
    one = read_array(write(tmp_path, "s.csv", "42\n"))
    assert one.values.shape == (1, 1) and one.values[0, 0] == 42


def test_not_text(tmp_path):
    assert "UTF-8" in error_of(read_array, write(tmp_path, "l.csv", b"caf\xe9,1\n1,2\n"))
    assert "NUL" in error_of(read_array, write(tmp_path, "z.csv", b"1,2\x00\n"))


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in error_of(read_array, str(tmp_path / "nope.csv"))
    assert "directory" in error_of(read_array, str(tmp_path))


def test_parse_text_str():
    values, names = parse_text("a\tb\n1\t2\n", "<str>")
    assert names == ["a", "b"] and values.tolist() == [[1, 2]]


# ----------------------------------------------------------------------------
# NPY / NPZ


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8,
                                   np.int64])
def test_npy_numeric(tmp_path, dtype):
    arr = (np.arange(12).reshape(3, 4) * 3).astype(dtype)
    loaded = read_array(write(tmp_path, "a.npy", npy(arr)))
    assert loaded.values.dtype == arr.dtype and loaded.fmt == "npy"
    np.testing.assert_array_equal(loaded.values, arr)


def test_npy_longdouble_becomes_float64(tmp_path):
    arr = np.array([1.5, 2.5], dtype=np.longdouble)
    loaded = read_array(write(tmp_path, "l.npy", npy(arr)))
    assert loaded.values.dtype == np.float64


class _Planted:
    """Unpickling this would create a file: proof that a payload ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_npy_object_dtype_is_refused_without_unpickling(tmp_path):
    marker = str(tmp_path / "PWNED")
    data = npy(np.array([_Planted(marker), 1], dtype=object), allow_pickle=True)
    assert b"PWNED" in data  # the file really carries a pickle payload
    path = write(tmp_path, "o.npy", data)
    msg = error_of(read_array, path)
    assert "object" in msg.lower() and "unpickle" in msg
    assert not os.path.exists(marker)
    # the same inside an NPZ archive
    buf = io.BytesIO()
    np.savez(buf, logits=np.array([_Planted(marker)], dtype=object))
    msg = error_of(read_array, write(tmp_path, "o.npz", buf.getvalue()))
    assert "object" in msg.lower()
    assert not os.path.exists(marker)


@pytest.mark.parametrize("arr, what", [
    (np.array([1 + 2j, 3j]), "complex"),
    (np.array([True, False]), "boolean"),
    (np.array(["a", "b"]), "string"),
    (np.array([b"a"]), "bytes"),
])
def test_npy_non_real_refused(tmp_path, arr, what):
    msg = error_of(read_array, write(tmp_path, "x.npy", npy(arr)))
    assert what in msg


def test_npy_truncated_and_garbled(tmp_path):
    data = npy(np.arange(100.0))
    msg = error_of(read_array, write(tmp_path, "t.npy", data[:-16]))
    assert "truncated" in msg
    msg = error_of(read_array, write(tmp_path, "h.npy", data[:20]))
    assert "NPY" in msg


def test_npz_key_single_missing(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((2, 3)), b=np.ones((4, 2)))
    two = write(tmp_path, "two.npz", buf.getvalue())
    assert "--key" in error_of(read_array, two)
    got = read_array(two, key="b")
    assert got.values.shape == (4, 2) and got.fmt == "npz"
    msg = error_of(read_array, two, key="zz")
    assert "'zz'" in msg and "a, b" in msg
    buf = io.BytesIO()
    np.savez(buf, only=np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_array(write(tmp_path, "one.npz", buf.getvalue())).values,
                                  np.arange(6.0).reshape(2, 3))
    buf = io.BytesIO()
    np.savez(buf, logits=np.eye(2), classes=np.array(["cat", "dog"]))
    named = read_array(write(tmp_path, "named.npz", buf.getvalue()))
    assert named.class_names == ["cat", "dog"]
    bad = write(tmp_path, "bad.npz", b"PK\x03\x04garbage")
    assert "NPZ" in error_of(read_array, bad)


# ----------------------------------------------------------------------------
# standard input


def _stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_stdin_csv(monkeypatch):
    _stdin(monkeypatch, b"a,b\n1,2\n")
    got = read_array("-")
    assert got.source == "<stdin>" and got.class_names == ["a", "b"]
    assert got.values.tolist() == [[1, 2]]


def test_stdin_npy(monkeypatch):
    arr = np.array([[1.5, 2.5]], dtype=np.float32)
    _stdin(monkeypatch, npy(arr))
    got = read_array("-")
    assert got.fmt == "npy" and got.values.dtype == np.float32
    np.testing.assert_array_equal(got.values, arr)


def test_stdin_empty(monkeypatch):
    _stdin(monkeypatch, b"")
    assert "<stdin>" in error_of(read_array, "-")


# ----------------------------------------------------------------------------
# writing


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_shortest_strings_round_trip(dtype):
    rng = np.random.default_rng(1)
    finfo = np.finfo(dtype)
    with np.errstate(over="ignore"):
        x = np.concatenate([
            rng.normal(0, 1, 500) * 10.0 ** rng.integers(-6, 6, 500),
            [0.1, 1 / 3, -0.0, finfo.max, finfo.tiny, finfo.smallest_subnormal, np.nan, np.inf,
             -np.inf],
        ]).astype(dtype)
    strings = shortest_strings(x)
    back = np.array([dtype(s) if s not in ("nan", "inf", "-inf") else float(s) for s in strings],
                    dtype=dtype)
    np.testing.assert_array_equal(back.view(f"u{x.itemsize}")[~np.isnan(x)],
                                  x.view(f"u{x.itemsize}")[~np.isnan(x)])
    assert np.isnan(back[np.isnan(x)]).all()
    # shortest: never longer than the repr of the same float in float64's 17 digits
    assert max(len(s) for s in strings) <= 24
    if dtype is not np.float64:
        assert shortest_strings(np.array([0.1], dtype=dtype)) == ["0.1"]


def test_shortest_strings_bfloat16_round_trips():
    x = np.array([0.1, 3.0e38, -1e-30, 1 / 3], dtype=ml_dtypes.bfloat16)
    back = np.array([float(s) for s in shortest_strings(x)]).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(back.view(np.uint16), x.view(np.uint16))


def test_csv_and_json_encodings():
    v = np.array([[0.1, np.nan], [np.inf, 1e-300]])
    text = csv_text(v, ["a,b", "c"], ",")
    assert text.splitlines()[0] == '"a,b",c'
    assert text.splitlines()[1:] == ["0.1,nan", "inf,1e-300"]
    values, names = parse_text(csv_text(v), "<round trip>")
    np.testing.assert_array_equal(values, v)
    doc = json.loads(json_document({"k": 1}, {"values": v}))
    assert doc["k"] == 1 and doc["values"] == [[0.1, "nan"], ["inf", 1e-300]]
    arr = np.load(io.BytesIO(npy_bytes(np.array([1.5], dtype=ml_dtypes.bfloat16))))
    assert arr.dtype == np.float32 and arr[0] == 1.5


def test_output_format():
    assert output_format("a.NPY", None) == "npy"
    assert output_format("a.tsv", None) == "tsv"
    assert output_format("a.txt", "json") == "json"
    assert "format" in error_of(output_format, "a.bin", None)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as fh:
            fh.write("partial")
            raise RuntimeError("mid-write")
    assert os.listdir(tmp_path) == []
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(target), "wb") as fh:
            fh.write(b"new")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out.csv"] and target.read_text() == "old"
    with atomic_output(str(target)) as fh:
        fh.write("new")
    assert os.listdir(tmp_path) == ["out.csv"] and target.read_text() == "new"


def test_atomic_output_refuses_missing_directory(tmp_path):
    assert "does not exist" in error_of(
        lambda: atomic_output(str(tmp_path / "nope" / "x.csv")).__enter__())
