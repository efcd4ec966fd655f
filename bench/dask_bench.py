"""Bench: smx xent on Dask (1 and 2 worker processes) vs the single-process streamed path.

    python bench/dask_bench.py                 # 2 GB of float32 logits, 3 repeats
    python bench/dask_bench.py --gb 0.2 --repeats 1 --markdown

Writes a Zarr store (uncompressed, whole-row chunks of about 64 MB) and the
same logits as one NPY file into --dir, with random labels. Times, as
medians over --repeats:

- ``stream``: the single-process streamed path of ``smx xent FILE.npy``
  (:func:`smx_cli.core.xent.evaluate_blocks` over NPY row blocks), one thread;
- ``dask zarr`` / ``dask npy``: :func:`smx_cli.dask.xent_summary` on a
  ``LocalCluster`` of 1 or 2 single-threaded worker processes, reading the
  Zarr store, or the NPY file as ``stream`` does (the engine's own cost).

Wall time and CPU time (``time.process_time`` in the workers, summed) are
reported; the per-core throughput (GB per CPU-second of the workers) gives
the projected time for 1 TB on N workers, assuming the storage keeps up
(1 TB / (N x per-core throughput)). The machine this runs on is shared:
use medians, and CPU time over wall time when they disagree.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLASSES = 32000


def make_data(directory: str, gb: float, seed: int = 0):
    import zarr

    os.makedirs(directory, exist_ok=True)
    rows = int(gb * 1e9 / (CLASSES * 4))
    store = os.path.join(directory, f"logits-{rows}.zarr")
    npy = os.path.join(directory, f"logits-{rows}.npy")
    labels = os.path.join(directory, f"labels-{rows}.npy")
    chunk = max(1, (64 << 20) // (CLASSES * 4))
    if not (os.path.exists(store) and os.path.exists(npy)):
        rng = np.random.default_rng(seed)
        if hasattr(zarr, "create_array"):  # zarr 3
            z = zarr.create_array(store, shape=(rows, CLASSES), chunks=(chunk, CLASSES),
                                  dtype="f4", compressors=None, overwrite=True)
        else:
            z = zarr.open_array(store, mode="w", shape=(rows, CLASSES), chunks=(chunk, CLASSES),
                                dtype="f4", compressor=None)
        mm = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, CLASSES))
        for s in range(0, rows, chunk):
            b = (rng.standard_normal((min(chunk, rows - s), CLASSES), dtype=np.float32) * 3)
            z[s:s + len(b)] = b
            mm[s:s + len(b)] = b
        mm.flush()
        del mm
        np.save(labels, rng.integers(0, CLASSES, rows))
    return store, npy, labels, rows


def run_stream(npy: str, labels: str):
    from smx_cli.core.xent import evaluate_blocks
    from smx_cli.io import stream

    y = np.load(labels)
    shape, _ = stream.npy_info(npy)
    c0, w0 = time.process_time(), time.perf_counter()
    blocks = ((s, xb) for s, _, xb in stream.iter_npy_blocks(npy, block_bytes=16 << 20))
    res = evaluate_blocks(blocks, shape[0], shape[1], y, threads=1)
    return time.perf_counter() - w0, time.process_time() - c0, res.reduced


def run_dask(client, store: str, labels: str):
    """On a distributed client (CPU: the workers'), or in this process ("synchronous")."""
    import smx_cli.dask as sd

    x = sd.open_array(store)
    y = np.load(labels)
    if client == "synchronous":
        c0, w0 = time.process_time(), time.perf_counter()
        s = sd.xent_summary(x, y, scheduler="synchronous")
        return time.perf_counter() - w0, time.process_time() - c0, s.reduced
    before = client.run(time.process_time)
    w0 = time.perf_counter()
    s = sd.xent_summary(x, y, scheduler=client)
    wall = time.perf_counter() - w0
    after = client.run(time.process_time)
    cpu = sum(after[k] - before.get(k, 0.0) for k in after)
    return wall, cpu, s.reduced


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="size of the logits [2]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/smx-dask-bench")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--workers", default="1,2", help="worker processes to try [1,2]")
    ap.add_argument("--untuned", action="store_true",
                    help="dask's default worker settings (profiler on, memory trimmed after "
                         "every free) instead of the ones the README recommends")
    ap.add_argument("--sources", default="zarr,npy",
                    help="what dask reads: the Zarr store, the NPY file (as stream does) [both]")
    args = ap.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    if not args.untuned:
        # the README's recommended worker settings for big array jobs: no statistical
        # profiler (it samples every thread's stack 100 times a second), and freed
        # chunk memory kept for the next chunk instead of returned to the OS and
        # faulted in again page by page
        dask.config.set({"distributed.worker.profile.enabled": False,
                         "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1 << 30,
                         "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 1 << 25})

    t0 = time.perf_counter()
    store, npy, labels, rows = make_data(args.dir, args.gb)
    print(f"data: {rows:,} x {CLASSES:,} float32 ({rows * CLASSES * 4 / 1e9:.2f} GB) in "
          f"{args.dir} ({time.perf_counter() - t0:.0f} s to make)", file=sys.stderr)
    nbytes = rows * CLASSES * 4
    results = {}
    stream_runs = [run_stream(npy, labels) for _ in range(args.repeats)]
    results["stream (1 process)"] = stream_runs
    sources = {"zarr": store, "npy": npy}
    for src in args.sources.split(","):
        # the same graph in this process, no worker: the engine's own cost
        results[f"dask {src}, in-process"] = [run_dask("synchronous", sources[src], labels)
                                              for _ in range(args.repeats)]
    for workers in [int(w) for w in args.workers.split(",")]:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            run_dask(client, store, labels)  # warm: imports in the workers
            for src in args.sources.split(","):
                results[f"dask {src}, {workers} worker(s)"] = [
                    run_dask(client, sources[src], labels) for _ in range(args.repeats)]
    ref = stream_runs[0][2]
    assert all(r[2] == ref for runs in results.values() for r in runs), "results differ"

    base_wall = statistics.median(r[0] for r in stream_runs)
    base_cpu = statistics.median(r[1] for r in stream_runs)
    lines = ["| run | wall s | CPU s | wall / stream | CPU / stream | GB per CPU-s |",
             "|---|---:|---:|---:|---:|---:|"]
    per_core = None
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        thr = nbytes / 1e9 / cpu
        if name.startswith("dask zarr, 1"):
            per_core = thr
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base_wall:.2f} | "
                     f"{cpu / base_cpu:.2f} | {thr:.2f} |")
    lines.append("")
    if per_core is None:
        print("\n".join(lines))
        return
    lines.append(f"projected 1 TB at {per_core:.2f} GB per worker-CPU-second (dask zarr, "
                 "1 worker):")
    for n in (1, 8, 64, 256):
        secs = 1e3 / (per_core * n)
        lines.append(f"- {n} worker(s): {secs / 60:.1f} min" if secs >= 60
                     else f"- {n} worker(s): {secs:.0f} s")
    text = "\n".join(lines)
    if not args.markdown:
        text = text.replace("|---|---:|---:|---:|---:|---:|\n", "")
    print(text)


if __name__ == "__main__":  # LocalCluster(processes=True) spawns workers that import this file
    main()
