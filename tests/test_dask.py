"""smx on Dask (smx_cli.dask, --scheduler): the same answers as one machine.

References: the single-machine functions on the concatenated data (bitwise
where the algorithm is the same), the long-double softmax reference for the
two-stage reduction of a split class axis, and math.fsum for the exact sums.
Clusters are module-scoped (started once) and bound to 127.0.0.1.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import dask.array as da  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import smx_cli.dask as sd  # noqa: E402
from smx_cli.analysis.diagnostics import diagnose  # noqa: E402
from smx_cli.cli import cli  # noqa: E402
from smx_cli.core import registry  # noqa: E402
from smx_cli.core import xent as core_xent  # noqa: E402
from smx_cli.core.precision import FORMATS, ulp_error  # noqa: E402
from smx_cli.core.reference import exact_softmax  # noqa: E402
from smx_cli.core.softmax import compute as core_compute  # noqa: E402
from smx_cli.core.softmax import logsumexp as core_logsumexp  # noqa: E402
from smx_cli.dask.exact import ExactSum, total  # noqa: E402
from smx_cli.errors import SmxError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNC = "synchronous"


def _logits(n=60, c=23, seed=0, dtype=np.float64, special=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c)) * 15
    if special:
        x[3, 5] = np.inf
        x[4, :] = -np.inf
        x[5, 7] = np.nan
        x[6, [1, c - 2]] = np.inf       # +inf entries in two column chunks
        x[7, 2] = -np.inf
        x[8] = 700.0 + np.arange(c)     # near exp's overflow
    return x.astype(dtype)


# ----------------------------------------------------------------------------
# exact sums


def test_exact_sum_merges_to_the_correctly_rounded_total():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-300, 300, 500),
                        [1e16, 1.0, -1e16, 1.0, 2.0 ** -1074, 3.0 ** 40]])
    rng.shuffle(v)
    cuts = np.sort(rng.integers(0, len(v), 9))
    blocks = np.split(v, cuts)
    assert total(ExactSum.of(b) for b in blocks) == math.fsum(v.tolist())
    # a plain float sum of the blocks' sums is not exact: the test can tell
    assert total(ExactSum.of(b) for b in ([1e16, 1.0], [-1e16, 1.0])) == 2.0


def test_exact_sum_specials_and_overflow_as_core_exact_sum():
    cases = [[np.inf, 1.0], [np.inf, -np.inf], [np.nan, 1.0], [1e308, 1e308, -1e308],
             [2.0 ** 1023, 2.0 ** 1023], [-np.inf]]
    for vals in cases:
        for k in range(len(vals) + 1):
            got = (ExactSum.of(vals[:k]) + ExactSum.of(vals[k:])).value()
            want = core_xent.exact_sum(vals)
            assert got == want or (math.isnan(got) and math.isnan(want)), (vals, k)


# ----------------------------------------------------------------------------
# sources: NPY shards and Zarr stores


@pytest.fixture
def shards(tmp_path):
    x = _logits(40, 6, special=False).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 6, 40)
    (tmp_path / "s").mkdir()
    (tmp_path / "l").mkdir()
    # names sort as 0, 1, 2 (not by creation order); one shard big-endian, one Fortran
    for name, a, b in (("b1", 10, 25), ("a0", 0, 10), ("c2", 25, 40)):
        part = x[a:b]
        if name == "b1":
            part = part.astype(">f4")
        if name == "c2":
            part = np.asfortranarray(part)
        np.save(tmp_path / "s" / f"{name}.npy", part)
        np.save(tmp_path / "l" / f"{name}.npy", y[a:b])
    return tmp_path, x, y


def test_npy_shards_concatenate_in_sorted_order(shards):
    tmp, x, y = shards
    a = sd.open_array(str(tmp / "s" / "*.npy"), chunk_bytes=7 * 6 * 4)
    assert a.chunks[0][:2] == (7, 7)                     # chunks span shard boundaries
    assert np.array_equal(a.compute(scheduler=SYNC), x)
    assert a.dtype == np.float32
    lab = sd.open_labels(str(tmp / "l" / "*.npy"), 6)
    assert np.array_equal(lab.compute(scheduler=SYNC), y)


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_bad_shards_name_the_shard(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    np.save(d / "a.npy", np.zeros((3, 4)))
    pattern = str(d / "*.npy")
    np.save(d / "b.npy", np.zeros((3, 5)))
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e) and "same classes" in str(e.value)
    np.save(d / "b.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e) and "same dtype" in str(e.value)
    np.save(d / "b.npy", np.zeros(4))
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e) and "2-D" in str(e.value)
    # truncated: the header claims more rows than the file holds
    np.save(d / "b.npy", np.zeros((3, 4)))
    data = (d / "b.npy").read_bytes()
    (d / "b.npy").write_bytes(data[:-9])
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e) and "truncated" in str(e.value)
    # a lying header: a huge claimed shape, the data of a small one
    (d / "b.npy").write_bytes(data.replace(b"(3, 4)", b"(3000000000, 4)"))
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e)
    # objects are refused from the header, never unpickled
    np.save(d / "b.npy", np.array([[None, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e)
    (d / "b.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(SmxError) as e:
        sd.open_array(pattern)
    assert "b.npy" in _one_line(e)
    with pytest.raises(SmxError, match="no file matches"):
        sd.open_array(str(tmp_path / "nothing" / "*.npy"))


def test_zarr_input_and_bad_store(tmp_path):
    x = _logits(30, 8)
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(7, 3),
                        dtype="f8")
    z[:] = x
    a = sd.open_array(str(tmp_path / "x.zarr"))
    assert a.chunks[1] == (3, 3, 2)                       # kept, not rechunked
    assert np.array_equal(a.compute(scheduler=SYNC), x, equal_nan=True)
    # a damaged chunk: one line naming the store and the rows, at compute time
    chunk = next(os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "x.zarr") for f in fs
                 if "json" not in f and not f.startswith("."))
    with open(chunk, "r+b") as fh:
        fh.truncate(5)
    with pytest.raises(SmxError) as e:
        sd.open_array(str(tmp_path / "x.zarr")).compute(scheduler=SYNC)
    assert "x.zarr: cannot read rows" in _one_line(e)
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{ not json")
    with pytest.raises(SmxError) as e:
        sd.open_array(str(bad))
    assert "bad.zarr" in _one_line(e)


# ----------------------------------------------------------------------------
# the softmax family


@pytest.mark.parametrize("variant", [v for v in registry.ALL_VARIANTS if v != "gumbel"])
def test_every_variant_bitwise_equal_to_one_machine(variant):
    x = _logits(45, 9)
    want = registry.run(x, variant).result.values
    got = sd.compute(da.from_array(x, chunks=(8, -1)), variant).compute(scheduler=SYNC)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_emulated_dtype_and_gumbel_per_block():
    x = _logits(20, 9, special=False)
    want = registry.run(x, "naive", dtype="float16").result.values
    got = sd.compute(da.from_array(x, chunks=(6, -1)), "naive", dtype="float16")
    np.testing.assert_array_equal(got.compute(scheduler=SYNC), want)
    opts = registry.VariantOptions(seed=3)
    g = sd.compute(da.from_array(x, chunks=(6, -1)), "gumbel", options=opts)
    a, b = g.compute(scheduler=SYNC), g.compute(scheduler="threads")
    np.testing.assert_array_equal(a, b)                   # reproducible per block
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    # the report (another pass over the blocks) draws the same noise as the values
    rep = sd.softmax_report(da.from_array(x, chunks=(6, -1)), "gumbel", options=opts,
                         head_rows=20, scheduler=SYNC)
    np.testing.assert_array_equal(rep.head_values, a)


@pytest.mark.parametrize("variant", ["stable", "log", "online"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_split_class_axis_two_stage_against_the_reference(variant, dtype):
    x = _logits(50, 37, dtype=dtype)
    fmt = FORMATS[np.dtype(dtype).name]
    single = core_compute(x, variant).values
    for chunks in ((9, 10), (50, 4), (13, (1, 30, 6))):
        got = sd.compute(da.from_array(x, chunks=chunks), variant).compute(scheduler=SYNC)
        assert got.dtype == single.dtype
        # special rows exactly as one machine: NaN, +inf sharing, fully masked
        np.testing.assert_array_equal(got[3:7], single[3:7])
        p, logp = exact_softmax(x.astype(np.float64))
        ok = np.isfinite(x).all(axis=1)
        if variant == "log":
            ref = logp[ok]
            err = np.abs(got[ok].astype(np.float64) - ref.astype(np.float64)) / \
                np.spacing(np.maximum(np.abs(ref), 1).astype(dtype)).astype(np.float64)
        else:
            ref = p[ok]
            normal = ref >= fmt.smallest_normal
            err = ulp_error(got[ok].astype(np.float64), ref, fmt)[normal]
        assert err.max() <= 4.0, (chunks, float(err.max()))
        if dtype != np.float64:   # computed in float64 and rounded once: one machine's values
            assert np.mean(got[ok] == single[ok]) > 0.999


def test_split_class_axis_logsumexp_and_masked_zeros():
    x = _logits(30, 21)
    got = sd.logsumexp(da.from_array(x, chunks=(7, 5))).compute(scheduler=SYNC)
    want = core_logsumexp(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    assert np.max(np.abs(got[fin] - want[fin]) / np.spacing(np.abs(want[fin]))) <= 2
    z = sd.compute(da.from_array(x, chunks=(7, 5)), "stable", masked="zeros")
    assert np.all(z.compute(scheduler=SYNC)[4] == 0.0)


def test_split_class_axis_refuses_row_variants():
    x = da.from_array(_logits(10, 8), chunks=(5, 4))
    with pytest.raises(SmxError, match="rechunk"):
        sd.compute(x, "sparsemax")
    with pytest.raises(SmxError, match="rechunk"):
        sd.compute(x, "stable", dtype="float16")
    with pytest.raises(SmxError, match="whole rows"):
        sd.xent_summary(x, np.zeros(10, dtype=int), scheduler=SYNC)


def test_empty_chunks():
    x = _logits(12, 9)[:, :5]
    xd = da.from_array(x, chunks=((4, 0, 3, 0, 5), (5,)))
    assert 0 in xd.chunks[0]
    np.testing.assert_array_equal(sd.compute(xd).compute(scheduler=SYNC), core_compute(x).values)
    split = xd.rechunk({1: (2, 3)})
    assert np.array_equal(np.isnan(sd.softmax(split).compute(scheduler=SYNC)),
                          np.isnan(core_compute(x).values))
    y = np.arange(12) % 5
    s = sd.xent_summary(xd, y, scheduler=SYNC)
    want = core_xent.evaluate(x, y)
    np.testing.assert_equal((s.mean_loss, s.n_nonfinite, s.n_correct),
                            (want.mean_loss, want.n_nonfinite, want.n_correct))
    rep = sd.softmax_report(xd, scheduler=SYNC)
    assert rep.diagnostics == diagnose(x, core_compute(x))
    e = sd.xent_summary(da.zeros((0, 5), chunks=(1, -1)), np.zeros(0, dtype=int),
                        scheduler=SYNC)
    assert e.n_samples == 0 and math.isnan(e.reduced)


def test_softmax_report_diagnostics_equal_diagnose():
    x = _logits(70, 11)
    for variant in ("stable", "naive", "sparsemax", "log"):
        one = registry.run(x, variant)
        want = diagnose(one.logits, one.result, sparse=variant in registry.SPARSE_OUTPUT)
        rep = sd.softmax_report(da.from_array(x, chunks=(9, -1)), variant, head_rows=12,
                                scheduler=SYNC)
        assert rep.diagnostics == want, variant
        np.testing.assert_array_equal(rep.head_values, one.result.values[:12])
    rep = sd.softmax_report(da.from_array(x, chunks=(9, 4)), "stable", scheduler=SYNC)
    want = diagnose(x, core_compute(x))
    assert rep.diagnostics.output_nan == want.output_nan
    assert rep.diagnostics.argmax_counts == want.argmax_counts


# ----------------------------------------------------------------------------
# cross-entropy


XENT_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"label_smoothing": 0.1, "weight": np.linspace(0.5, 2, 7)},
    {"ignore_index": 3, "weight": np.linspace(0.5, 2, 7)},
    {"input_kind": "log-probs"},
]


@pytest.mark.parametrize("opts", XENT_OPTIONS)
def test_xent_summary_bitwise_equal_to_one_machine(opts):
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(83, 7)) * 4).astype(np.float32)
    if opts.get("input_kind") == "log-probs":
        x = core_compute(x.astype(np.float64), "log").values
    y = rng.integers(0, 7, 83)
    y[::11] = opts.get("ignore_index", -100)
    want = core_xent.evaluate(x, y, **opts)
    # labels chunked differently from the logits: aligned, not paired by position
    got = sd.xent_summary(da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(13,)),
                          scheduler=SYNC, **opts)
    eps = FORMATS[np.dtype(x.dtype).name].eps
    assert got.reduced == want.reduced or (math.isnan(got.reduced) and math.isnan(want.reduced))
    for name in ("denominator", "mean_loss", "mean_nll", "perplexity", "mean_entropy",
                 "accuracy", "top5_accuracy", "counted", "n_correct", "n_ignored",
                 "n_nonfinite", "n_samples", "target_kind"):
        assert getattr(got, name) == getattr(want, name), name
    assert got.vanished(eps) == want.vanished(eps)


def test_xent_temperature_as_one_machine():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(50, 9)) * 5).astype(np.float32)
    y = rng.integers(0, 9, 50)
    want = core_xent.evaluate(x.astype(np.float64) / 2.5, y)
    got = sd.xent_summary(da.from_array(x, chunks=(12, -1)), y, temperature=2.5,
                          scheduler=SYNC)
    assert (got.reduced, got.perplexity, got.n_correct) == \
        (want.reduced, want.perplexity, want.n_correct)


def test_xent_probability_targets_and_label_errors_name_the_global_row():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 4))
    t = rng.dirichlet(np.ones(4), size=30)
    want = core_xent.evaluate(x, t, label_smoothing=0.2)
    got = sd.xent_summary(da.from_array(x, chunks=(7, -1)), da.from_array(t, chunks=(11, 4)),
                          label_smoothing=0.2, scheduler=SYNC)
    assert (got.reduced, got.target_kind, got.denominator) == (want.reduced, "prob", 30.0)
    y = np.zeros(30, dtype=int)
    y[23] = 9
    with pytest.raises(SmxError) as e:
        sd.xent_summary(da.from_array(x, chunks=(7, -1)), y, scheduler=SYNC)
    assert _one_line(e).startswith("label 23 is 9")
    with pytest.raises(SmxError, match="29 labels for 30 rows"):
        sd.xent_summary(da.from_array(x, chunks=(7, -1)), y[:29], scheduler=SYNC)


def test_cross_entropy_none_pairs_labels_by_blockwise():
    x = _logits(25, 6, special=False)
    y = np.arange(25) % 6
    got = sd.cross_entropy(da.from_array(x, chunks=(4, -1)), da.from_array(y, chunks=(7,)),
                           reduction="none")
    np.testing.assert_array_equal(got.compute(scheduler=SYNC),
                                  core_xent.cross_entropy(x, y, reduction="none"))
    assert sd.cross_entropy(da.from_array(x, chunks=(4, -1)), y, scheduler=SYNC) == \
        core_xent.cross_entropy(x, y)


# ----------------------------------------------------------------------------
# clusters: threads, processes, a killed worker, a scheduler address


@pytest.fixture(scope="module")
def thread_cluster():
    # in-process: no network at all (inproc:// transport)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def process_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def _xent_case():
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(400, 31)) * 6).astype(np.float32)
    y = rng.integers(0, 31, 400)
    return x, y, core_xent.evaluate(x, y)


@pytest.mark.parametrize("which", ["thread_cluster", "process_cluster"])
def test_on_local_clusters(which, request):
    cluster = request.getfixturevalue(which)
    x, y, want = _xent_case()
    with distributed.Client(cluster, set_as_default=False) as client:
        seen = []
        got = sd.xent_summary(da.from_array(x, chunks=(50, -1)), y, scheduler=client,
                              progress=lambda d, t: seen.append((d, t)))
        assert (got.reduced, got.n_correct, got.perplexity) == \
            (want.reduced, want.n_correct, want.perplexity)
        assert seen[-1] == (8, 8)
        rep = sd.softmax_report(da.from_array(x, chunks=(50, 10)), "log", scheduler=client)
        assert rep.diagnostics.inputs.rows == 400


def _slow_block(xb):
    time.sleep(0.02)
    return xb


def test_a_worker_killed_mid_run_is_retried(process_cluster):
    x, y, want = _xent_case()
    xd = da.from_array(x, chunks=(20, -1)).map_blocks(_slow_block, dtype=x.dtype,
                                                     meta=np.empty((0, 0), x.dtype))
    with distributed.Client(process_cluster, set_as_default=False) as client:
        pids = list(client.run(os.getpid).items())
        state = {"killed": False}

        def progress(done, total):
            if done == 3 and not state["killed"]:   # mid-run: 3 of 20 blocks done
                os.kill(pids[0][1], 9)
                state["killed"] = True

        got = sd.xent_summary(xd, y, scheduler=client, progress=progress)
        assert state["killed"]
        assert (got.reduced, got.n_correct, got.mean_entropy) == \
            (want.reduced, want.n_correct, want.mean_entropy)


# ----------------------------------------------------------------------------
# the CLI


def _summary_lines(text):
    """The summary panel without its 'input' line (which names the source)."""
    start = text.index("╭")
    return [ln for ln in text[start:].splitlines() if " input " not in ln]


@pytest.fixture
def cli_data(tmp_path):
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(300, 12)) * 3).astype(np.float32)
    x[17, 3] = np.nan
    y = rng.integers(0, 12, 300)
    y[::13] = -100
    (tmp_path / "shards").mkdir()
    (tmp_path / "labels").mkdir()
    for i, (a, b) in enumerate(((0, 100), (100, 170), (170, 300))):
        np.save(tmp_path / "shards" / f"part{i}.npy", x[a:b])
        np.save(tmp_path / "labels" / f"part{i}.npy", y[a:b])
    np.save(tmp_path / "all.npy", x)
    np.save(tmp_path / "ally.npy", y)
    return tmp_path


def _smx(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="100", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "smx_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_xent_shards_processes_and_address_equal_the_concatenated_file(cli_data,
                                                                            process_cluster):
    runner = CliRunner()
    os.chdir(cli_data)
    one = runner.invoke(cli, ["xent", "all.npy", "--labels", "ally.npy", "--format", "json"])
    assert one.exit_code == 0, one.output
    want = json.loads(one.stdout)  # (stderr holds the one-line summary)
    table = runner.invoke(cli, ["xent", "all.npy", "--labels", "ally.npy"]).output
    args = ["xent", "shards/*.npy", "--labels", "labels/*.npy", "--format", "json"]
    # dask's process pool spawns workers: run smx as the user does, in its own process
    js = _smx(args + ["--scheduler", "processes"], cli_data)
    assert js.returncode == 0, js.stderr
    runs = [json.loads(js.stdout)]
    # a scheduler the test started on 127.0.0.1, with two worker processes
    addr = process_cluster.scheduler_address
    assert addr.startswith("tcp://127.0.0.1:")
    r = runner.invoke(cli, args + ["--scheduler", addr])
    assert r.exit_code == 0, r.output
    runs.append(json.loads(r.stdout))
    for got in runs:
        assert set(got) <= set(want) and got["samples"] == 300
        for k, v in got.items():
            if k != "source":
                assert want[k] == v, k
    # the terminal report through that scheduler: the same panel
    tab = runner.invoke(cli, args[:-2] + ["--scheduler", addr])
    assert tab.exit_code == 0, tab.output
    assert _summary_lines(tab.output) == _summary_lines(table)


def test_cli_softmax_threads_table_and_zarr_output(cli_data):
    runner = CliRunner()
    os.chdir(cli_data)
    # one machine: -o FILE writes the data and says so on stderr; the table is a run without -o
    assert runner.invoke(cli, ["softmax", "all.npy", "-o", "one.npy"]).exit_code == 0
    one = runner.invoke(cli, ["softmax", "all.npy", "--rows", "4"])
    many = runner.invoke(cli, ["softmax", "shards/*.npy", "--rows", "4", "--scheduler",
                               "threads", "-o", "out.zarr"])
    assert one.exit_code == 0 and many.exit_code == 0, many.output
    # as on one machine: -o sends the data to the store, stderr says what happened
    assert many.stdout == "" and "wrote out.zarr" in many.stderr
    assert many.stderr.startswith("smx: diagnostics: ")
    table = runner.invoke(cli, ["softmax", "shards/*.npy", "--rows", "4", "--scheduler",
                                "threads"])
    assert _summary_lines(table.stdout) == _summary_lines(one.stdout)
    assert one.stdout.splitlines()[2:8] == table.stdout.splitlines()[2:8]  # the first rows
    assert not [ln for ln in table.stdout.splitlines() if ln.endswith(" ")]  # no padding
    np.testing.assert_array_equal(zarr.open_array("out.zarr", mode="r")[:], np.load("one.npy"))
    assert not [n for n in os.listdir(".") if n.startswith(".smx-")]


def test_cli_xent_per_sample_zarr_output(cli_data):
    runner = CliRunner()
    os.chdir(cli_data)
    one = runner.invoke(cli, ["xent", "all.npy", "--labels", "ally.npy", "-o", "one.npz"])
    many = runner.invoke(cli, ["xent", "shards/*.npy", "--labels", "labels/*.npy",
                               "--scheduler", "threads", "-o", "per.zarr"])
    assert one.exit_code == 0 and many.exit_code == 0, many.output
    assert "wrote per.zarr" in many.stderr and "wrote" not in many.stdout
    # as on one machine: -o leaves stdout empty, the one-line summary goes to stderr
    assert many.stdout == "" and many.stderr.splitlines()[0].startswith("smx: xent: 300 samples")
    r = runner.invoke(cli, ["xent", "shards/*.npy", "--labels", "labels/*.npy", "--scheduler",
                            "threads", "-o", "per2.zarr", "--quiet", "--summary"])
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and r.stdout.lstrip().startswith("╭─ summary")
    with np.load("one.npz", allow_pickle=False) as z:
        want = np.column_stack([z[k].astype(np.float64) for k in (
            "row", "label", "predicted", "p_true", "loss", "margin", "correct", "ignored")])
    got = zarr.open_array("per.zarr", mode="r")[:]
    assert got.shape == (300, 8)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want))
    r = runner.invoke(cli, ["xent", "all.npy", "--labels", "ally.npy", "--scheduler",
                            "threads", "-o", "per.csv"])
    assert r.exit_code == 2


def test_cli_usage_and_data_errors(cli_data):
    runner = CliRunner()
    os.chdir(cli_data)
    for args in (["softmax", "all.npy", "--scheduler", "thread"],
                 ["softmax", "all.npy", "--scheduler", "threads", "--grad"],
                 ["softmax", "all.npy", "--scheduler", "threads", "-o", "x.npy"],
                 ["xent", "all.npy", "--labels", "ally.npy", "--scheduler", "threads",
                  "--worst", "3"],
                 ["xent", "all.npy", "--label-column", "0", "--scheduler", "threads"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 2, (args, r.output)
    np.save("shards/part1.npy", np.zeros((70, 11), dtype=np.float32))
    r = runner.invoke(cli, ["softmax", "shards/*.npy", "--scheduler", "threads",
                            "-o", "bad.zarr"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "part1.npy" in r.output
    assert not os.path.exists("bad.zarr")


def test_cli_unreachable_scheduler_is_one_line(cli_data, monkeypatch):
    import smx_cli.dask.run as run_mod

    monkeypatch.setattr(run_mod, "CONNECT_TIMEOUT", 0.5)
    os.chdir(cli_data)
    r = CliRunner().invoke(cli, ["xent", "all.npy", "--labels", "ally.npy",
                                 "--scheduler", "tcp://127.0.0.1:9"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: cannot reach the dask scheduler at tcp://127.0.0.1:9")
    assert r.output.count("\n") == 1


def test_failed_run_leaves_no_zarr_store(tmp_path):
    def boom(xb):
        if xb.size and xb[0, 0] > 1e9:
            raise SmxError("boom")
        return xb

    x = np.zeros((20, 3))
    x[15, 0] = 2e9
    xd = da.from_array(x, chunks=(5, -1)).map_blocks(boom, dtype=x.dtype)
    out = tmp_path / "p.zarr"
    with pytest.raises(SmxError, match="boom"):
        sd.softmax_report(xd, output=str(out), scheduler=SYNC)
    assert os.listdir(tmp_path) == []


def test_help_does_not_import_dask():
    code = ("import sys; from click.testing import CliRunner; from smx_cli.cli import cli; "
            "r = CliRunner().invoke(cli, ['softmax', '--help']); "
            "assert '--scheduler' in r.output; "
            "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------
# compare-stability


def test_compare_stability_equals_one_machine_with_exact_median():
    from smx_cli.analysis import compare as cmp
    from smx_cli.dask.compare import compare_stability

    x = np.load(os.path.join(ROOT, "samples", "mnist_lenet_logits.npy"))[:600]
    want = cmp.compare_stability(x, dtypes=("float16", "bfloat16"))
    got = compare_stability(da.from_array(x, chunks=(77, -1)), dtypes=("float16", "bfloat16"),
                            scheduler=SYNC)
    # json: NaN == NaN in the worst rows' outputs; the medians are bitwise equal
    assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())


def test_cli_compare_on_shards(cli_data):
    runner = CliRunner()
    os.chdir(cli_data)
    one = runner.invoke(cli, ["compare-stability", "all.npy", "--format", "json"])
    many = runner.invoke(cli, ["compare-stability", "shards/*.npy", "--format", "json",
                               "--scheduler", "threads"])
    assert one.exit_code == 0 and many.exit_code == 0, many.output
    a, b = json.loads(one.output), json.loads(many.output)
    assert a.pop("source") == "all.npy" and b.pop("source") == "shards/*.npy"
    assert a == b
    r = runner.invoke(cli, ["compare-stability", "all.npy", "--sweep", "--scheduler", "threads"])
    assert r.exit_code == 2
