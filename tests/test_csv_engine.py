"""The text engine: polars and the exact parser accept the same inputs, give the
same values bit for bit and the same error messages; float32 is rounded once;
blocks are bounded; output is the shortest exact form in the result's format."""
import io
import os
from decimal import Decimal, localcontext

import numpy as np
import pytest
from click.testing import CliRunner

import smx_cli.cli.softmax as cmd_softmax
from smx_cli.cli import cli
from smx_cli.core.precision import BFLOAT16
from smx_cli.core.softmax import compute
from smx_cli.errors import SmxError
from smx_cli.io import csv_engine, stream, text

pytest.importorskip("polars")

ENGINES = ("exact", "fast")


def outcome(data: bytes, engine: str, dtype=np.float64, **kw):
    """(values, names) or the error message, read through one engine."""
    try:
        return csv_engine.read_text(data, "<t>", engine=engine, dtype=dtype, **kw)
    except SmxError as exc:
        return str(exc)


def same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return (a[1] == b[1] and a[0].dtype == b[0].dtype and a[0].shape == b[0].shape
            and a[0].tobytes() == b[0].tobytes())


WIDE = csv_engine.WIDE_COLUMNS + 3


def wide(rows: list[list[str]]) -> str:
    return "".join(",".join(r) + "\n" for r in rows)


def wide_rows(n=4):
    return [[f"{(i * WIDE + j) * 0.25 - 7:g}" for j in range(WIDE)] for i in range(n)]


def _wide_bad(i, j, tok):
    rows = wide_rows()
    rows[i][j] = tok
    return wide(rows)


def _wide_short(i):
    rows = wide_rows()
    rows[i].pop()
    rows[i + 1].append("1")  # the total count still fits: each line is checked
    return wide(rows)


# (name, text, expected: a list of rows, or a fragment of the error message)
CASES = [
    ("plain", "1,2\n3,4\n", [[1, 2], [3, 4]]),
    ("no final newline", "1,2\n3,4", [[1, 2], [3, 4]]),
    ("bom and header", "\ufeffcat,dog\n1,2\n", [[1, 2]]),
    ("crlf", "a,b\r\n1,2\r\n3,4\r\n", [[1, 2], [3, 4]]),
    ("comments", "# top\n1,2 # tail\n# mid\n3,4\n", [[1, 2], [3, 4]]),
    ("trailing delimiter", "1,2,\n3,4,\n", [[1, 2], [3, 4]]),
    ("some trailing", "1,2,\r\n3,4\r\n", [[1, 2], [3, 4]]),
    ("blank lines", "1,2\n\n   \n3,4\n\n", [[1, 2], [3, 4]]),
    ("blanks around tokens", "  1, 2 ,3\n4,\t5,6\n", [[1, 2, 3], [4, 5, 6]]),
    ("spellings", "nan,NaN,-nan,+NAN\ninf,-Inf,+INFINITY,-infinity\n",
     [[np.nan] * 4, [np.inf, -np.inf, np.inf, -np.inf]]),
    ("forms", "1.,.5,-0,+1e-3\n1E5,00001,2.5e+3,-.25\n",
     [[1, .5, -0.0, 1e-3], [1e5, 1, 2500, -.25]]),
    ("numeric first row is data", "10,20\n1,2\n", [[10, 20], [1, 2]]),
    ("quoted header", '"a","b"\n1,2\n', [[1, 2]]),
    ("tab", "a\tb\n1\t2\n", [[1, 2]]),
    ("semicolon", "1;2\n3;4\n", [[1, 2], [3, 4]]),
    ("whitespace", "1 2  3\n4\t5 6\n", [[1, 2, 3], [4, 5, 6]]),
    ("one column", "x\n1\n2\n", [[1], [2]]),
    ("underflow", "1e-400,5e-324\n", [[0, 5e-324]]),
    ("long token", "1.4937277436256408691406250000000000000001,0\n",
     [[1.4937277436256409, 0]]),
    ("short row", "1,2\n3\n", "line 2 has 1 values, expected 2 (line 1's count)"),
    ("long row", "a,b\n1,2\n3,4,5\n", "line 3 has 3 values, expected 2 (the header's count)"),
    ("empty field", "1,2,3\n4,,6\n", "line 2, column 2: an empty value"),
    ("empty last field", "1,2,3\n4,5,,\n", "line 2, column 3: an empty value"),
    ("overflow", "1,2\n3,1e400\n", "line 2, column 2: '1e400' overflows float64"),
    ("overflow among infs", "inf,2\n-inf,-1e999\n", "line 2, column 2: '-1e999' overflows"),
    ("underscore", "1,2\n1_0,3\n", "line 2, column 1: '1_0' is not a number"),
    ("hex", "1,0x10\n", "line 1, column 2: '0x10'"),
    ("inner space", "1,2\n3,4 5\n", "line 2, column 2: '4 5'"),
    ("arabic digit", "1,\u0661\n", "line 1, column 2"),
    ("vertical tab is no line end", "1,2\v3,4\n", "line 1, column 2: '2\\x0b3' is not"),
    ("form feed is no line end", "1,2\n3,4\f5\n", "line 2, column 2: '4\\x0c5'"),
    ("file separator", "1,2\x1c3\n", "line 1, column 2"),
    ("trailing form feed", "1,2\n3,4\f\n", "line 2, column 2: '4\\x0c'"),
    ("lone cr", "1,2\r3,4\n5,6\n", "line 1, column 2: '2\\r3' is not"),
    ("first problem in file order", "1,2\n3,x\n4\n", "line 2, column 2: 'x'"),
    ("ragged before bad token", "1,2\n3\n4,x\n", "line 2 has 1 values"),
    ("overflow before bad token", "1,2\n3,1e999\n4,x\n", "line 2, column 2: '1e999' overflows"),
    ("decimal comma", "1;2,5\n", "decimal comma"),
    ("header hint", "cat,1\n2,3\n", "line 1, column 1: 'cat' is not a number; pass --header"),
    ("nul", "1,2\x00\n", "NUL"),
    ("empty", "", "no data"),
    ("only comments", "# a\n\n# b\n", "no data"),
    ("only header", "a,b,c\n", "only a header row"),
    ("long bad token", "1," + "9" * 30 + "x" * 5000 + "\n", "...' is not a number"),
    ("wide", wide(wide_rows()), [[float(t) for t in r] for r in wide_rows()]),
    ("wide bad token", _wide_bad(2, WIDE - 2, "1e5e5"), f"line 3, column {WIDE - 1}: '1e5e5'"),
    ("wide empty", _wide_bad(1, 7, ""), "line 2, column 8: an empty value"),
    ("wide ragged", _wide_short(1), f"line 2 has {WIDE - 1} values"),
    ("wide overflow", _wide_bad(3, 0, "2e308"), "line 4, column 1: '2e308' overflows"),
]


@pytest.mark.parametrize("name, text_in, expected", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("block_bytes", [csv_engine.BLOCK_BYTES, 9])
def test_both_paths_agree_with_the_whole_text_parser(name, text_in, expected, block_bytes):
    data = text_in.encode("utf-8")
    ref = outcome(data, "exact")
    try:
        whole = text.parse_text(data, "<t>")
    except SmxError as exc:
        whole = str(exc)
    assert same(ref, whole), (ref, whole)
    for engine in ENGINES:
        got = _blocked(data, engine, block_bytes)
        assert same(got, ref), (engine, got, ref)
    if isinstance(expected, str):
        assert isinstance(ref, str) and expected in ref, ref
        assert ref.startswith("<t>") or "delimiter" in ref
    else:
        assert not isinstance(ref, str), ref
        want = np.array(expected, dtype=np.float64)
        np.testing.assert_array_equal(ref[0], want)
        assert (np.signbit(ref[0]) == np.signbit(want)).all()


def _blocked(data, engine, block_bytes, dtype=np.float64):
    try:
        pairs = list(csv_engine.iter_blocks(data, "<t>", engine=engine, dtype=dtype,
                                            block_bytes=block_bytes))
        return np.concatenate([v for v, _ in pairs]), pairs[0][1].names
    except SmxError as exc:
        return str(exc)


def test_the_fast_path_parses_clean_blocks_itself(monkeypatch):
    """A clean file never reaches the exact parser on the fast path (a mutation
    that always fell back would pass every agreement test)."""
    data = "".join(f"{i},{i / 7!r},-inf,nan\n" for i in range(2000)).encode()

    def refuse(*a, **k):
        raise AssertionError("the exact parser was called")

    monkeypatch.setattr(text, "parse_rows", refuse)
    values, _ = csv_engine.read_text(data, "<t>", engine="fast")
    assert values.shape == (2000, 4) and values[1999, 1] == 1999 / 7
    for bad in (b"1,2\n3\n", b"1,2\n\n3,4\n", b"1,2,3\n4,5\n", b"1,1e999\n"):
        with pytest.raises(AssertionError):  # each of these needs the exact parser
            csv_engine.read_text(b"0,0\n" + bad, "<t>", engine="fast")


def test_env_var_forces_the_engine(monkeypatch):
    monkeypatch.setattr(csv_engine, "FAST_MIN_BYTES", 100)
    assert csv_engine.engine_for(10) == "exact" and csv_engine.engine_for(100) == "fast"
    monkeypatch.setenv(csv_engine.ENGINE_ENV, "exact")
    assert csv_engine.engine_for(10 ** 12) == "exact"
    monkeypatch.setenv(csv_engine.ENGINE_ENV, "fast")
    assert csv_engine.engine_for(0) == "fast"


# ---------------------------------------------------------------------------
# exactness


def random_values(n: int, dtype, seed: int) -> np.ndarray:
    """Random bit patterns (every exponent, subnormals) plus the special values."""
    rng = np.random.default_rng(seed)
    uint = np.uint64 if dtype == np.float64 else np.uint32
    bits = rng.integers(0, np.iinfo(uint).max, n, dtype=uint, endpoint=True)
    x = bits.view(dtype).copy()
    x[np.isnan(x)] = np.nan
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).smallest_subnormal,
                -np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max, np.finfo(dtype).tiny]
    x[:len(specials)] = np.array(specials, dtype=dtype)
    return x


def midpoint_tokens(n: int, seed: int):
    """Decimal tokens 1e-40 above or below an exact float32 midpoint, and the
    float32 each must round to (the neighbour on its side)."""
    rng = np.random.default_rng(seed)
    a = random_values(n, np.float32, seed)
    a = a[np.isfinite(a) & (np.abs(a) < np.finfo(np.float32).max) & ~((a == 0) & np.signbit(a))]
    b = np.nextafter(a, np.float32(np.inf))
    tokens, want = [], []
    with localcontext() as ctx:
        ctx.prec = 400  # every sum below is exact
        for lo, hi, up in zip(a.tolist(), b.tolist(), rng.integers(0, 2, a.size).tolist()):
            mid = (Decimal(lo) + Decimal(hi)) / 2  # exact: both are binary fractions
            nudge = Decimal(1).scaleb(mid.adjusted() - 45)  # 45 digits below its first
            tokens.append(format(mid + nudge if up else mid - nudge, "e"))
            want.append(np.float32(hi if up else lo))
    return tokens, np.array(want, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("engine", ENGINES)
def test_every_value_reads_back_bit_exactly(engine, dtype):
    x = random_values(100_000, dtype, seed=7).reshape(-1, 50)
    data = csv_engine.format_rows(x, engine="fast") if engine == "fast" else \
        csv_engine.format_rows(x, engine="exact")
    got, _ = csv_engine.read_text(data, "<t>", engine=engine, dtype=dtype)
    assert got.dtype == dtype
    assert got.tobytes() == x.tobytes()


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_is_rounded_once_from_the_decimal_token(engine):
    tokens, want = midpoint_tokens(20_000, seed=3)
    tokens = tokens[:len(tokens) // 40 * 40]
    want = want[:len(tokens)]
    data = "".join(",".join(tokens[i:i + 40]) + "\n" for i in range(0, len(tokens), 40))
    got, _ = csv_engine.read_text(data.encode(), "<t>", engine=engine, dtype=np.float32)
    assert got.ravel().tobytes() == want.tobytes()
    # the double rounding this avoids: through float64 many come back one ulp off
    twice = np.array(tokens, dtype=np.float64).astype(np.float32)
    assert (twice != want).sum() > len(tokens) // 4


def test_the_issues_token_rounds_up_in_float32():
    tok = b"1.4937277436256408691406250000000000000001\n"
    for engine in ENGINES:
        got, _ = csv_engine.read_text(tok, "<t>", engine=engine, dtype=np.float32)
        assert got[0, 0] == np.nextafter(np.float32(1.4937277), np.float32(2))


def test_float32_overflow_is_named():
    for engine in ENGINES:
        msg = outcome(b"1,2\n3,4e38\n", engine, dtype=np.float32)
        assert "line 2, column 2: '4e38' overflows float32" in msg


# ---------------------------------------------------------------------------
# writing


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32, np.float64])
def test_output_is_the_shortest_form_in_the_results_own_format(dtype):
    with np.errstate(over="ignore"):  # float16 overflows to inf: kept as inf
        x = random_values(3000, np.float32, seed=1).astype(np.float64).astype(dtype).reshape(-1, 10)
    for engine in ENGINES:
        out = csv_engine.format_rows(x, engine=engine).decode()
        tokens = [t for line in out.splitlines() for t in line.split(",")]
        back = np.array(tokens, dtype=np.float64).astype(dtype).reshape(x.shape)
        assert back.tobytes() == x.astype(dtype).tobytes() or \
            np.array_equal(back, x, equal_nan=True)
        for tok, v in zip(tokens[:400], x.ravel()[:400]):  # no shorter digit string works
            digits = tok.lstrip("-").split("e")[0].replace(".", "").strip("0")
            if np.isfinite(v) and v != 0 and len(digits) > 1:
                shorter = f"{float(v):.{len(digits) - 1}g}"
                assert np.array([float(shorter)]).astype(dtype)[0] != v, (tok, shorter)


def test_sixteen_bit_formats_are_written_as_themselves():
    h = np.array([[1 / 3, 0.1]], dtype=np.float16)
    assert csv_engine.format_rows(h) == b"0.3333,0.1\n"
    b = np.array([[1 / 3, 0.1]], dtype=BFLOAT16)
    assert csv_engine.format_rows(b) == b"0.334,0.1\n"  # bfloat16(0.1) reads back from 0.1


def test_integers_digits_and_nan_spelling():
    assert csv_engine.format_rows(np.array([[1, -2]])) == b"1,-2\n"
    x = np.array([[1 / 3, np.nan, -np.inf, 2.0]] * 3)
    for engine in ENGINES:
        assert csv_engine.format_rows(x, engine=engine).split(b"\n")[0].split(b",")[1:] == \
            [b"nan", b"-inf", b"2.0"]
    assert csv_engine.format_rows(x[:1], digits=3) == b"0.333,nan,-inf,2\n"


# ---------------------------------------------------------------------------
# blocks, streaming, the CLI


def test_blocks_are_bounded_and_errors_keep_file_lines(tmp_path):
    p = tmp_path / "x.csv"
    rows = [f"{i},{i + 0.5}" for i in range(5000)]
    rows[4321] = "7,oops"
    p.write_text("a,b\n" + "\n".join(rows) + "\n")
    for engine in ENGINES:
        sizes = []
        with pytest.raises(SmxError, match="line 4323, column 2: 'oops'"):
            for v, _ in csv_engine.iter_blocks(str(p), engine=engine, block_bytes=4096):
                sizes.append(v.shape[0])
        assert len(sizes) > 5 and max(sizes) <= 4096 // 4


@pytest.fixture
def big_text(monkeypatch):
    """Every text input streams in small blocks through the forced engine."""
    monkeypatch.setattr(cmd_softmax, "_TEXT_STREAM_BYTES", 0)
    monkeypatch.setattr(cmd_softmax, "_TEXT_BLOCK", 300)
    monkeypatch.setattr(cmd_softmax, "_STREAM_BLOCK", 400)


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_text_to_npy_and_back_streamed(tmp_path, monkeypatch, big_text, engine):
    monkeypatch.setenv(csv_engine.ENGINE_ENV, engine)
    x = np.random.default_rng(0).normal(0, 5, (300, 7))
    x[5, 3] = -np.inf
    src = tmp_path / "x.csv"
    src.write_text("# logits\n" + "\n".join(",".join(repr(v) for v in r) for r in x.tolist()) + "\n")
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(tmp_path / "p.npy")])
    assert r.exit_code == 0, r.stderr
    assert "streamed" in r.stdout
    want = compute(x).values
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.tsv")])
    assert r.exit_code == 0, r.stderr
    back, _ = csv_engine.read_text(str(tmp_path / "q.tsv"), dtype=np.float32)
    np.testing.assert_array_equal(back, compute(x.astype(np.float32)).values)
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(tmp_path / "r.csv"), "--digits", "3"])
    assert r.exit_code == 0, r.stderr
    first = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert first == [f"{v:.3g}" for v in want[0]]


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_bad_row_in_a_streamed_file_names_the_line_and_writes_nothing(
        tmp_path, monkeypatch, big_text, engine):
    monkeypatch.setenv(csv_engine.ENGINE_ENV, engine)
    lines = [f"{i},{i},{i}" for i in range(400)]
    lines[333] = "1,2"
    src = tmp_path / "x.csv"
    src.write_text("\n".join(lines) + "\n")
    for out in ("p.npy", "p.csv"):
        r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(tmp_path / out)])
        assert r.exit_code == 1
        assert r.stderr.strip() == (f"Error: {src}: line 334 has 2 values, expected 3 "
                                    "(line 1's count); fix the ragged row")
    assert sorted(os.listdir(tmp_path)) == ["x.csv"]


def test_npy_row_writer_rewrites_its_header_in_place():
    buf = io.BytesIO()
    w = stream.NpyRowWriter(buf)
    for _ in range(3):
        w.write(np.ones((1000, 3), dtype=np.float32))
    assert w.finish() == (3000, 3)
    got = np.load(io.BytesIO(buf.getvalue()))
    assert got.shape == (3000, 3) and got.dtype == np.float32 and got.sum() == 9000
    assert len(buf.getvalue()) == 128 + 3000 * 3 * 4


def test_labels_and_masks_do_not_break_lines_at_vertical_tabs(tmp_path):
    from smx_cli.io.labels import read_labels
    from smx_cli.io.masks import read_mask

    (tmp_path / "y.csv").write_text("0\n1\x0b1\n")
    with pytest.raises(SmxError, match="line 2"):
        read_labels(str(tmp_path / "y.csv"))
    (tmp_path / "m.csv").write_text("1,0\x0c1,1\n")
    with pytest.raises(SmxError, match="line 1"):
        read_mask(str(tmp_path / "m.csv"), (2, 2))


@pytest.mark.parametrize("engine", ENGINES)
def test_hostile_text_in_a_later_block(engine):
    good = b"".join(b"%d,%d\n" % (i, i) for i in range(1000))
    at = len(good) + 2
    msg = outcome(good + b"1,\xff\n", engine, block_bytes=100)
    assert msg == f"<t>: not UTF-8 text (bad byte at offset {at}); expected CSV/TSV text, NPY or NPZ"
    assert "NUL" in outcome(good + b"1,\x00\n", engine, block_bytes=100)
    # one line far longer than a block, and a last line without its newline
    long_line = b",".join(b"1" for _ in range(5000)) + b"\n"
    values, _ = csv_engine.read_text(long_line * 3 + long_line[:-1], "<t>", engine=engine,
                                     block_bytes=64)
    assert values.shape == (4, 5000)
    # a header that claims more columns than the rows have
    msg = outcome(b"a,b,c\n" + good, engine, block_bytes=100)
    assert msg.startswith("<t>: line 2 has 2 values, expected 3 (the header's count)")


def test_digits_out_of_range_is_a_usage_error(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    for bad in ("0", "18", "x"):
        r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.csv"), "--format", "csv",
                                     "--digits", bad])
        assert r.exit_code == 2 and "--digits" in r.stderr
    r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.csv"), "--format", "csv",
                                 "--digits", "2"])
    assert r.exit_code == 0 and r.stdout == "0.27,0.73\n"
