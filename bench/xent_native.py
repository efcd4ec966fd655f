"""Cross-entropy on the compiled core, through the library and the CLI (issue 12).

Run from the repository root after building the extension in place:

    python bench/xent_native.py            # library 4096 x 32000 and the 1.6 GB CLI run
    python bench/xent_native.py --quick    # small shapes, a 64 MB file
    python bench/xent_native.py --only lib # or: cli

Library (one process, medians of ``--repeat``): ``smx_cli.xent`` (``evaluate``,
``reduction='none'``) on float32 4096 x 32000 class-index targets, on the native
engine, on the numpy engine (``native.numpy_engine()``), the bare kernel
``native.xent_rows``, and ``torch.nn.functional.cross_entropy(reduction='none')``;
plain and with label smoothing 0.1 + class weights; and probability targets
(float32 (N, C), smoothing 0.1 + weights: ``native.xent_prob_rows``, ``evaluate``,
torch). Two clocks: wall
(``perf_counter``, default threads) and cpu1 (``process_time`` with one thread:
``threads=1``, ``torch.set_num_threads(1)``), the stable per-core figure on a
shared machine.

Memory: the peak of numpy's traced allocations (``tracemalloc``) during one
``evaluate(reduction='none')`` call and one kernel call, minus the (N,) outputs
they return ("extra").

Gradient: ``evaluate(want_grad=True, reduction='mean')`` on float32 1024 x 32000
(``native.xent_grad_rows`` on the native engine, the float64 log-softmax plus
numpy on the numpy engine) against torch's forward + backward of
``F.cross_entropy`` (float32).

CLI: ``smx xent big.npy --labels y.npy --format json`` on a float32 NPY of ~1.6 GB
generated under /tmp (deleted afterwards) against a blocked copy of the file
(16 MB ``readinto`` blocks, written and fsynced), each in a fresh child; wall, child
CPU and peak RSS from ``/usr/bin/time``; medians of ``--cli-repeat``. The page cache is
warm for all of them (the file is read once first).
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
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from smx_cli.core import native  # noqa: E402
from smx_cli.core.xent import evaluate  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def median_time(fn, repeat: int, clock) -> float:
    fn()  # warm up
    ts = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts)


def numpy_engine(fn):
    def run():
        with native.numpy_engine():
            return fn()
    return run


def bench_lib(n: int, c: int, repeat: int) -> list[dict]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c), dtype=np.float32) * 3
    y = rng.integers(0, c, n)
    w = rng.uniform(0.5, 2.0, c)
    rows = []
    for label, opts in (("plain", {}), ("smoothing 0.1 + weights", {"label_smoothing": 0.1,
                                                                     "weight": w})):
        r = {"case": f"xent f32 {n}x{c} {label}"}
        for name, threads_fn in (
            ("smx native", lambda t: lambda: evaluate(x, y, reduction="none", threads=t, **opts)),
            ("smx numpy", lambda t: numpy_engine(
                lambda: evaluate(x, y, reduction="none", threads=t, **opts))),
            ("kernel", lambda t: lambda: native.xent_rows(
                x, y, weight=opts.get("weight"), label_smoothing=opts.get("label_smoothing", 0.0),
                threads=t)),
        ):
            if name != "smx numpy" and native.engine() == "numpy":
                continue
            reps = repeat if name != "smx numpy" else max(1, repeat // 2)
            r[f"{name} wall"] = median_time(threads_fn(None), reps, time.perf_counter)
            r[f"{name} cpu1"] = median_time(threads_fn(1), reps, time.process_time)
        if torch is not None:
            F = torch.nn.functional
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            tw = torch.from_numpy(w.astype(np.float32)) if "weight" in opts else None
            eps = opts.get("label_smoothing", 0.0)

            def call():
                return F.cross_entropy(tx, ty, weight=tw, reduction="none", label_smoothing=eps)
            nt = torch.get_num_threads()
            r["torch wall"] = median_time(call, repeat, time.perf_counter)
            torch.set_num_threads(1)
            r["torch cpu1"] = median_time(call, repeat, time.process_time)
            torch.set_num_threads(nt)
        rows.append(r)
    rows.append(bench_prob(x, w, repeat))
    rows.append(bench_memory(x, y))
    rows.append(bench_grad(x[: max(1, n // 4)], y[: max(1, n // 4)], repeat))
    return rows


def traced_peak_mb(fn) -> float:
    """Peak traced allocation of one call beyond what it returns, in MB."""
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(v.nbytes for v in (out.values() if isinstance(out, dict) else vars(out).values())
               if isinstance(v, np.ndarray))
    return (peak - kept) / 2**20


def bench_memory(x: np.ndarray, y: np.ndarray) -> dict:
    r = {"case": f"extra memory, xent f32 {x.shape[0]}x{x.shape[1]} (MB, tracemalloc)"}
    if native.engine() != "numpy":
        r["kernel MB"] = traced_peak_mb(lambda: native.xent_rows(x, y))
        r["smx native MB"] = traced_peak_mb(lambda: evaluate(x, y, reduction="none"))
    return r


def bench_grad(x: np.ndarray, y: np.ndarray, repeat: int) -> dict:
    n, c = x.shape
    r = {"case": f"xent gradient f32 {n}x{c} (mean)"}
    fns = [("smx native", lambda th: lambda: evaluate(x, y, want_grad=True, threads=th)),
           ("smx numpy", lambda th: numpy_engine(lambda: evaluate(x, y, want_grad=True,
                                                                 threads=th)))]
    for name, fn in fns:
        if name != "smx numpy" and native.engine() == "numpy":
            continue
        reps = repeat if name != "smx numpy" else max(1, repeat // 2)
        r[f"{name} wall"] = median_time(fn(None), reps, time.perf_counter)
        r[f"{name} cpu1"] = median_time(fn(1), reps, time.process_time)
    if torch is not None:
        F = torch.nn.functional
        ty = torch.from_numpy(y)

        def call():
            tx = torch.from_numpy(x).requires_grad_(True)
            F.cross_entropy(tx, ty).backward()
            return tx.grad
        nt = torch.get_num_threads()
        r["torch wall"] = median_time(call, repeat, time.perf_counter)
        torch.set_num_threads(1)
        r["torch cpu1"] = median_time(call, repeat, time.process_time)
        torch.set_num_threads(nt)
    return r


def bench_prob(x: np.ndarray, w: np.ndarray, repeat: int) -> dict:
    """Probability targets (float32, smoothing 0.1 + weights): the bare kernel
    ``native.xent_prob_rows``, ``evaluate`` on both engines (it validates and widens the
    targets to float64 first: check_target), and torch."""
    n, c = x.shape
    rng = np.random.default_rng(3)
    t = rng.random((n, c), dtype=np.float32)
    t /= t.sum(axis=1, keepdims=True)
    r = {"case": f"xent f32 {n}x{c} probability targets, smoothing 0.1 + weights"}
    kw = {"weight": w, "label_smoothing": 0.1}
    fns = [("kernel", lambda th: lambda: native.xent_prob_rows(x, t, threads=th, **kw)),
           ("smx native", lambda th: lambda: evaluate(x, t, reduction="none", threads=th,
                                                      target_tolerance=None, **kw)),
           ("smx numpy", lambda th: numpy_engine(lambda: evaluate(
               x, t, reduction="none", threads=th, target_tolerance=None, **kw)))]
    for name, fn in fns:
        if name != "smx numpy" and native.engine() == "numpy":
            continue
        reps = repeat if name != "smx numpy" else max(1, repeat // 2)
        r[f"{name} wall"] = median_time(fn(None), reps, time.perf_counter)
        r[f"{name} cpu1"] = median_time(fn(1), reps, time.process_time)
    if torch is not None:
        F = torch.nn.functional
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        tw = torch.from_numpy(w.astype(np.float32))

        def call():
            return F.cross_entropy(tx, tt, weight=tw, reduction="none", label_smoothing=0.1)
        nt = torch.get_num_threads()
        r["torch wall"] = median_time(call, repeat, time.perf_counter)
        torch.set_num_threads(1)
        r["torch cpu1"] = median_time(call, repeat, time.process_time)
        torch.set_num_threads(nt)
    return r


def make_npy(path: str, n: int, c: int) -> None:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, c))
    rng = np.random.default_rng(0)
    step = max(1, (16 << 20) // (4 * c))
    for s in range(0, n, step):
        mm[s:s + step] = rng.standard_normal((min(step, n - s), c), dtype=np.float32) * 3
    mm.flush()
    del mm


_COPY = r"""
import os, sys
src, dst = sys.argv[1], sys.argv[2]
buf = bytearray(16 << 20)
view = memoryview(buf)
with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
    while True:
        k = fi.readinto(buf)
        if not k:
            break
        fo.write(view[:k])
    os.fsync(fo.fileno())
"""


def child(argv: list[str], env=None) -> dict:
    """Wall, CPU (user + system) and peak RSS of one fresh child, by /usr/bin/time.

    Not ``os.wait4`` of our own child: a vforked child's ru_maxrss starts at this
    (large) parent's peak; /usr/bin/time's child is forked from a small process.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name, *argv],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{argv} failed: {p.stderr.decode()[-500:]}")
        user, system, kb = tf.read().split()[-3:]
    return {"wall": wall, "cpu": float(user) + float(system), "rss_mb": int(kb) / 1024}


def med(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def bench_cli(n: int, c: int, repeat: int) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="smx-xent-bench-", dir="/tmp")
    big, labels, copy = (os.path.join(tmp, f) for f in ("big.npy", "y.npy", "copy.npy"))
    rows = []
    try:
        make_npy(big, n, c)
        np.save(labels, np.random.default_rng(2).integers(0, c, n))
        size_gb = os.path.getsize(big) / 1e9
        with open(big, "rb") as fh:  # warm the page cache for every run alike
            while fh.read(64 << 20):
                pass
        runs = []
        for _ in range(repeat):
            runs.append(child([sys.executable, "-c", _COPY, big, copy]))
            os.remove(copy)
        base = med(runs)
        rows.append({"case": f"blocked copy {size_gb:.2f} GB (fsync)", **base})
        smx = [sys.executable, "-m", "smx_cli", "xent", big, "--labels", labels,
               "--format", "json"]
        for label, env_extra in (("native", {}), ("numpy", {"SMX_ENGINE": "numpy"})):
            env = {**os.environ, **env_extra}
            eng = json.loads(subprocess.run(
                [sys.executable, "-c", "from smx_cli.core import native; import json; "
                 "print(json.dumps(native.engine()))"], env=env, cwd=ROOT, capture_output=True,
                text=True, check=True).stdout)
            r = med([child(smx, env) for _ in range(repeat)])
            rows.append({"case": f"smx xent {size_gb:.2f} GB, engine {eng}", **r,
                         "wall / copy": r["wall"] / base["wall"],
                         "cpu / copy": r["cpu"] / base["cpu"]})
    finally:
        for f in (big, labels, copy):
            if os.path.exists(f):
                os.remove(f)
        os.rmdir(tmp)
    return rows


def show(rows: list[dict]) -> None:
    for r in rows:
        cells = []
        for k, v in r.items():
            if k == "case":
                continue
            if k.endswith(("wall", "cpu1")) and v < 100:
                cells.append(f"{k} {v * 1e3:.0f} ms")
            elif isinstance(v, float):
                cells.append(f"{k} {v:.3g}")
        if len(cells) == 0 and len(r) == 1:
            continue
        print(f"{r['case']}: " + ", ".join(cells))
        if "torch wall" in r and "kernel wall" in r:
            print(f"    kernel / torch: wall {r['kernel wall'] / r['torch wall']:.2f}x, "
                  f"cpu1 {r['kernel cpu1'] / r['torch cpu1']:.2f}x")
        if "torch wall" in r and "smx native wall" in r:
            print(f"    native / torch: wall {r['smx native wall'] / r['torch wall']:.2f}x, "
                  f"cpu1 {r['smx native cpu1'] / r['torch cpu1']:.2f}x; native / numpy engine: "
                  f"wall {r['smx native wall'] / r['smx numpy wall']:.2f}x, "
                  f"cpu1 {r['smx native cpu1'] / r['smx numpy cpu1']:.2f}x")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["lib", "cli"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cli-repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"engine {native.engine()}, load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cpus")
    if args.only in (None, "lib"):
        show(bench_lib(*((512, 4000) if args.quick else (4096, 32000)), args.repeat))
    if args.only in (None, "cli"):
        show(bench_cli(*((500, 32000) if args.quick else (12800, 32000)), args.cli_repeat))


if __name__ == "__main__":
    main()
