"""The streaming engine: NPY and CSV in row blocks, atomic output, engines agree."""
import os
import time

import numpy as np
import pytest

from smx_cli.io import stream
from smx_cli.io import csv_text, shortest_strings
from smx_cli.core.softmax import compute


def files(d):
    return sorted(os.listdir(d))


@pytest.mark.parametrize("shape", ((1, 7), (7, 1), (0, 5), (1000, 3), (37, 301)))
@pytest.mark.parametrize("dtype", (np.float16, np.float32, np.float64))
def test_streamed_npy_equals_in_memory(tmp_path, shape, dtype):
    x = np.random.default_rng(0).normal(0, 3, shape).astype(dtype)
    src, dst = tmp_path / "x.npy", tmp_path / "p.npy"
    np.save(src, x)
    seen = []
    got_shape = stream.stream_npy(str(src), str(dst), lambda xb: compute(xb).values,
                                  block_bytes=1000, progress=lambda a, b: seen.append((a, b)))
    out = np.load(dst)
    assert got_shape == shape and out.dtype == dtype
    np.testing.assert_array_equal(out, compute(x).values)
    assert seen[-1] == (shape[0], shape[0])
    assert files(tmp_path) == ["p.npy", "x.npy"]


def test_streamed_npy_3d_fortran_and_big_endian(tmp_path):
    x = np.random.default_rng(1).normal(0, 3, (4, 5, 6))
    np.save(tmp_path / "a.npy", x)
    stream.stream_npy(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                      lambda xb: compute(xb, "log").values, block_bytes=100)
    want = compute(x.reshape(20, 6), "log").values.reshape(4, 5, 6)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), want)
    f = np.asfortranarray(x[0])
    np.save(tmp_path / "f.npy", f)
    stream.stream_npy(str(tmp_path / "f.npy"), str(tmp_path / "g.npy"),
                      lambda xb: compute(xb).values, block_bytes=64)
    np.testing.assert_array_equal(np.load(tmp_path / "g.npy"), compute(x[0]).values)
    np.save(tmp_path / "e.npy", x[0].astype(">f8"))
    stream.stream_npy(str(tmp_path / "e.npy"), str(tmp_path / "h.npy"),
                      lambda xb: compute(xb).values)
    np.testing.assert_array_equal(np.load(tmp_path / "h.npy"), compute(x[0]).values)


@pytest.mark.parametrize("exc", (RuntimeError, KeyboardInterrupt))
def test_interrupted_stream_leaves_nothing(tmp_path, exc):
    x = np.zeros((100, 10))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "old.npy").write_bytes(b"keep me")
    calls = []

    def fn(xb):
        calls.append(1)
        if len(calls) == 3:
            raise exc("stop")
        return xb

    with pytest.raises(exc):
        stream.stream_npy(str(tmp_path / "x.npy"), str(tmp_path / "new.npy"), fn, block_bytes=800)
    with pytest.raises(exc):
        calls.clear()
        stream.stream_npy(str(tmp_path / "x.npy"), str(tmp_path / "old.npy"), fn, block_bytes=800)
    assert files(tmp_path) == ["old.npy", "x.npy"]
    assert (tmp_path / "old.npy").read_bytes() == b"keep me"


def test_a_failed_background_write_stops_the_stream_and_keeps_the_old_output(tmp_path,
                                                                             monkeypatch):
    import threading

    from smx_cli import io as smx_io

    np.save(tmp_path / "x.npy", np.arange(1000.0).reshape(100, 10))
    (tmp_path / "old.npy").write_bytes(b"keep me")
    real, writes = smx_io.write_chunks, []

    def flaky(fh, data, *a):
        writes.append(1)
        if len(writes) == 3:
            raise OSError(28, "No space left on device")
        real(fh, data, *a)

    monkeypatch.setattr(smx_io, "write_chunks", flaky)
    before = threading.active_count()
    with pytest.raises(OSError, match="No space"):
        stream.stream_npy(str(tmp_path / "x.npy"), str(tmp_path / "old.npy"),
                          lambda xb: xb * 2, block_bytes=800)
    assert threading.active_count() == before  # the reader and writer threads stopped
    assert files(tmp_path) == ["old.npy", "x.npy"]
    assert (tmp_path / "old.npy").read_bytes() == b"keep me"


def test_prefetched_blocks_equal_plain_reads_and_stay_valid_until_the_next(tmp_path):
    x = np.random.default_rng(4).normal(size=(57, 13)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    kw = {"block_bytes": 13 * 4 * 5}
    plain = [(s, b.copy()) for s, _, b in stream.iter_npy_blocks(str(tmp_path / "x.npy"),
                                                                  prefetch=False, **kw)]
    seen = []
    for s, _, b in stream.iter_npy_blocks(str(tmp_path / "x.npy"), **kw):
        held = b.copy()
        time.sleep(0.01)  # the reader runs ahead meanwhile
        np.testing.assert_array_equal(b, held)
        seen.append((s, held))
    assert [s for s, _ in seen] == [s for s, _ in plain] == list(range(0, 57, 5))
    for (_, a), (_, b) in zip(seen, plain):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate([b for _, b in seen]), x)
    np.save(tmp_path / "s.npy", x.astype(">f4"))  # byte-swapped: converted per block
    got = [b.copy() for _, _, b in stream.iter_npy_blocks(str(tmp_path / "s.npy"), **kw)]
    np.testing.assert_array_equal(np.concatenate(got), x)
    # a truncated file fails in the reader thread: the error reaches the consumer
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:len(data) - 13 * 4 * 20])
    with pytest.raises(stream.StreamError, match="ends early"):
        list(stream.iter_npy_blocks(str(tmp_path / "t.npy"), **kw))
    # abandoning the generator stops its thread
    import threading

    before = threading.active_count()
    it = stream.iter_npy_blocks(str(tmp_path / "x.npy"), **kw)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_truncated_and_object_npy_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 10)))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-8])
    with pytest.raises(stream.StreamError, match="truncated NPY"):
        stream.stream_npy(str(tmp_path / "t.npy"), str(tmp_path / "o.npy"), lambda b: b)
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(stream.StreamError, match="unpickles"):
        stream.stream_npy(str(tmp_path / "obj.npy"), str(tmp_path / "o.npy"), lambda b: b)
    assert "o.npy" not in files(tmp_path)


def csv_file(tmp_path, x, name="x.csv"):
    p = tmp_path / name
    p.write_text(csv_text(x))
    return str(p)


ENGINES = ["numpy"] + (["polars"] if stream.have_polars() else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_blocks_read_back_exactly(tmp_path, engine):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (500, 7)) * 10.0 ** rng.integers(-30, 30, (500, 7))
    x[3, 2], x[4, 1], x[5, 0] = np.nan, np.inf, -np.inf
    p = csv_file(tmp_path, x)
    blocks = list(stream.iter_csv_blocks(p, block_bytes=997, engine=engine))
    assert len(blocks) > 1
    got = np.concatenate(blocks)
    np.testing.assert_array_equal(got, x)


def test_csv_engines_agree(tmp_path):
    if not stream.have_polars():
        pytest.skip("polars not installed")
    x = np.random.default_rng(3).normal(0, 1, (300, 5)).astype(np.float32).astype(np.float64)
    text = "\n".join(",".join(f"{v:.17g}" for v in r) for r in x) + "\n1e-5,2.5E+3, 3 ,-0,0.1\n"
    (tmp_path / "y.csv").write_text(text)
    a = np.concatenate(list(stream.iter_csv_blocks(str(tmp_path / "y.csv"), engine="numpy",
                                                   block_bytes=500)))
    b = np.concatenate(list(stream.iter_csv_blocks(str(tmp_path / "y.csv"), engine="polars",
                                                   block_bytes=500)))
    np.testing.assert_array_equal(a, b)
    assert a[-1, 1] == 2500.0 and a[-1, 2] == 3.0


def test_csv_header_and_ragged(tmp_path):
    (tmp_path / "h.csv").write_text("a,b\n1,2\n3,4\n")
    got = list(stream.iter_csv_blocks(str(tmp_path / "h.csv"), header=True, engine="numpy"))
    assert got[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (tmp_path / "r.csv").write_text("1,2\n3\n")
    with pytest.raises(Exception):
        list(stream.iter_csv_blocks(str(tmp_path / "r.csv"), engine="numpy"))


@pytest.mark.parametrize("dtype", (np.float16, np.float32, np.float64))
def test_csv_lines_match_shortest_strings(dtype):
    x = (np.random.default_rng(4).normal(0, 1, (20, 6)) * 1e-3).astype(dtype)
    x[0, 0] = np.nan
    lines = stream.csv_lines(x).splitlines()
    assert [t for line in lines for t in line.split(",")] == shortest_strings(x)


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_csv_equals_in_memory_and_is_atomic(tmp_path, engine):
    x = np.random.default_rng(5).normal(0, 3, (400, 9))
    p = csv_file(tmp_path, x)
    out = str(tmp_path / "p.csv")
    n = stream.stream_csv(p, out, lambda b: compute(b).values, block_bytes=2000, engine=engine)
    assert n == 400
    assert open(out).read() == csv_text(compute(x).values)

    def boom(b):
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        stream.stream_csv(p, str(tmp_path / "q.csv"), boom, engine=engine)
    assert files(tmp_path) == ["p.csv", "x.csv"]
