"""Benchmark ``smx calibrate``: fit + all metrics on big float32 logits, streamed from NPY.

Run from the repository root:

    python bench/calibrate.py                    # 1,000,000 x 1,000 float32 (4 GB file)
    python bench/calibrate.py --rows 100000      # smaller
    python bench/calibrate.py --repeat 3 --bootstrap 0

The logits file is generated once under bench/out/ (synthetic: labels drawn
from softmax(logits / 2), so the logits are 2x over-confident and T should be
~2). Each run is a fresh child process (``python -m smx_cli calibrate FILE --labels Y --format json``), so
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
import tempfile
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
        z[np.arange(k), rng.integers(0, classes, size=k)] += 14.0
        # labels drawn from softmax(z / 2): these logits are 2x over-confident (T = 2)
        p = np.exp((z - z.max(axis=1, keepdims=True)) / 2, dtype=np.float64)
        cdf = np.cumsum(p, axis=1)
        u = rng.random(k) * cdf[:, -1]
        labels[s:s + k] = (cdf < u[:, None]).sum(axis=1).clip(0, classes - 1)
        out[s:s + k] = z
    out.flush()
    del out
    os.replace(path + ".part", path)
    np.save(labels_path, labels)


def run_once(args, path, labels_path) -> dict:
    """One ``smx calibrate`` in a child: wall time, and the child's own CPU time and peak RSS."""
    cmd = [sys.executable, "-m", "smx_cli", "calibrate", path, "--labels", labels_path,
           "--format", "json", "--bootstrap", str(args.bootstrap)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)   # this child's rusage, nobody else's
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"smx calibrate failed: {err.read().decode()}")
        doc = json.loads(out.read())
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "doc": doc}


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
    # generated in a child process: the parent stays small (a forked child starts with
    # its parent's pages)
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r}); "
                    f"import calibrate as c; c.make({path!r}, {labels_path!r}, "
                    f"{args.rows}, {args.classes})"], check=True)
    print(f"input: {path} ({os.path.getsize(path) / 2**30:.2f} GiB; ready in "
          f"{time.perf_counter() - t0:.1f} s)")
    walls, cpus, rss = [], [], []
    for _ in range(args.repeat):
        r = run_once(args, path, labels_path)
        walls.append(r["wall_s"])
        cpus.append(r["cpu_s"])
        rss.append(r["rss_mb"])
        doc = r["doc"]
        print(f"  wall {r['wall_s']:.2f} s, cpu {r['cpu_s']:.2f} s, peak RSS "
              f"{r['rss_mb']:.0f} MB, passes {doc['passes']}, T "
              f"{doc['fit']['temperature']:.6g}, ECE {doc['before']['ece']:.4g} -> "
              f"{doc['after']['ece']:.4g}")
    print(f"median: wall {statistics.median(walls):.2f} s, cpu {statistics.median(cpus):.2f} s "
          f"(cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}), peak RSS "
          f"{max(rss):.0f} MB, bootstrap {args.bootstrap}")


if __name__ == "__main__":
    main()
