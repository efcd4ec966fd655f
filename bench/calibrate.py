"""Benchmark ``smx calibrate``: fit + all metrics on big float32 logits, streamed from NPY.

Run from the repository root:

    python bench/calibrate.py                    # 1,000,000 x 1,000 float32 (4 GB file)
    python bench/calibrate.py --rows 100000      # smaller
    python bench/calibrate.py --repeat 3 --bootstrap 0

The logits file is generated once under bench/out/ (synthetic: a model that
is right ~70 % of the time and over-confident). Each run is a fresh child
process (``python -m smx_cli calibrate FILE --labels Y --format json``), so
the wall time, the CPU time of all its threads (user + system, from
``os.wait4``) and its peak RSS (``ru_maxrss``) are those of the command a
user runs. The machine is shared: report medians and CPU time, not minima.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make(path: str, labels_path: str, rows: int, classes: int, seed: int = 0) -> None:
    if os.path.exists(path) and os.path.exists(labels_path):
        shape = np.load(path, mmap_mode="r").shape
        if shape == (rows, classes):
            return
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32,
                                    shape=(rows, classes))
    labels = np.empty(rows, dtype=np.int64)
    step = 20000
    for s in range(0, rows, step):
        k = min(step, rows - s)
        z = rng.standard_normal((k, classes), dtype=np.float32) * 2
        pred = rng.integers(0, classes, size=k)
        z[np.arange(k), pred] += 9.0     # confident ...
        right = rng.random(k) < 0.7      # ... but right only 70 % of the time
        labels[s:s + k] = np.where(right, pred, rng.integers(0, classes, size=k))
        out[s:s + k] = z
    out.flush()
    del out
    os.replace(path + ".part", path)
    np.save(labels_path, labels)


def run_once(args, path, labels_path) -> dict:
    cmd = [sys.executable, "-m", "smx_cli", "calibrate", path, "--labels", labels_path,
           "--format", "json", "--bootstrap", str(args.bootstrap)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"smx calibrate failed: {err.decode()}")
    doc = json.loads(out)
    return {"wall_s": wall, "doc": doc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=100)
    args = ap.parse_args()
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    path = os.path.join(HERE, "out", f"cal_{args.rows}x{args.classes}.npy")
    labels_path = os.path.join(HERE, "out", f"cal_{args.rows}x{args.classes}_labels.npy")
    t0 = time.perf_counter()
    make(path, labels_path, args.rows, args.classes)
    print(f"input: {path} ({os.path.getsize(path) / 2**30:.2f} GiB; ready in "
          f"{time.perf_counter() - t0:.1f} s)")
    walls, cpus, rss = [], [], []
    for _ in range(args.repeat):
        before = os.times()
        r = run_once(args, path, labels_path)
        after = os.times()
        cpu = (after.children_user - before.children_user) + \
              (after.children_system - before.children_system)
        import resource
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        walls.append(r["wall_s"])
        cpus.append(cpu)
        rss.append(peak)
        doc = r["doc"]
        print(f"  wall {r['wall_s']:.2f} s, cpu {cpu:.2f} s, peak RSS so far {peak:.0f} MB, "
              f"passes {doc['passes']}, T {doc['fit']['temperature']:.6g}, "
              f"ECE {doc['before']['ece']:.4g} -> {doc['after']['ece']:.4g}")
    print(f"median: wall {statistics.median(walls):.2f} s, cpu {statistics.median(cpus):.2f} s "
          f"(cores {os.cpu_count()}), peak RSS {max(rss):.0f} MB, bootstrap {args.bootstrap}")


if __name__ == "__main__":
    main()
