"""Benchmark of fast mode (``--fast``) and the ``online`` variant on the compiled core.

Run from the repository root after ``python setup.py build_ext --inplace``:

    python bench/fast.py                 # 4096 x 32000 (needs ~3 GB of RAM for float64)
    python bench/fast.py --quick         # 512 rows, 3 repeats
    python bench/fast.py --rows 4096 --repeat 7 --dtypes float32,float64

Each cell is the median of ``--repeat`` runs taken side by side in one process.

* wall: ``time.perf_counter``, default threads (smx: min(cpu, 2); torch: its
  intra-op default), allocating calls on both sides (smx's ``softmax(...,
  fast=True)`` path through :func:`smx_cli.core.softmax.compute`; torch
  ``torch.softmax(x, 1)`` / ``torch.log_softmax``): both pay the first-touch
  page faults of a fresh output;
* cpu1: ``time.process_time`` with ONE thread (smx threads=1,
  torch.set_num_threads(1)) into preallocated outputs (torch ``out=``).

Columns: the compiled fast kernel (native), the numpy fast kernels (numpy,
``SMX_ENGINE=numpy``'s path) and torch; ratios are smx / torch (< 1: smx is
faster). The online table compares the compiled online normaliser with the
numpy one and with the compiled accurate softmax (stable).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from smx_cli.core import native, native_fast  # noqa: E402
from smx_cli.core.softmax import compute  # noqa: E402

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


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _torch(x: np.ndarray):
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def _numpy(fn):
    def run():
        with native.numpy_engine():
            return fn()
    return run


def ms(t):
    return "-" if t is None else f"{t * 1e3:.1f}"


def ratio(a, b):
    return "-" if a is None or b is None or not b else f"{a / b:.2f}x"


def bench_fast(x: np.ndarray, variant: str, repeat: int, with_numpy: bool) -> dict:
    out = np.empty_like(x)
    r = {}
    r["native_wall"] = median_time(lambda: compute(x, variant, fast=True), repeat,
                                   time.perf_counter)
    r["native_cpu1"] = median_time(lambda: compute(x, variant, fast=True, threads=1, out=out),
                                   repeat, time.process_time)
    if with_numpy:
        r["numpy_wall"] = median_time(_numpy(lambda: compute(x, variant, fast=True)), repeat,
                                      time.perf_counter)
        r["numpy_cpu1"] = median_time(
            _numpy(lambda: compute(x, variant, fast=True, threads=1, out=out)), repeat,
            time.process_time)
    if torch is not None:
        xt = _torch(x)
        ot = torch.empty_like(xt)
        f = torch.softmax if variant == "stable" else torch.log_softmax
        nt = torch.get_num_threads()
        r["torch_wall"] = median_time(lambda: f(xt, 1), repeat, time.perf_counter)
        torch.set_num_threads(1)
        try:
            r["torch_cpu1"] = median_time(lambda: f(xt, 1, out=ot), repeat, time.process_time)
        finally:
            torch.set_num_threads(nt)
    return r


def bench_online(x: np.ndarray, repeat: int, with_numpy: bool) -> dict:
    out = np.empty_like(x)
    r = {"native_wall": median_time(lambda: compute(x, "online"), repeat, time.perf_counter),
         "native_cpu1": median_time(lambda: compute(x, "online", threads=1, out=out), repeat,
                                    time.process_time),
         "stable_cpu1": median_time(lambda: compute(x, "stable", threads=1, out=out), repeat,
                                    time.process_time)}
    if with_numpy:
        r["numpy_cpu1"] = median_time(_numpy(lambda: compute(x, "online", threads=1, out=out)),
                                      repeat, time.process_time)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="512 rows, 3 repeats")
    ap.add_argument("--dtypes", default="float16,bfloat16,float32,float64")
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy kernels")
    ap.add_argument("--no-online", action="store_true")
    a = ap.parse_args(argv)
    rows, repeat = (512, 3) if a.quick else (a.rows, a.repeat)
    shape = (rows, a.cols)
    print(f"# smx fast mode: engine {native_fast.engine()}, torch "
          f"{torch.__version__ if torch else '-'} ({torch.get_num_threads() if torch else '-'} "
          f"threads), shape {shape}, median of {repeat}\n")
    print("| dtype | variant | native wall ms | numpy wall ms | torch wall ms | native/torch wall"
          " | numpy/torch wall | native cpu1 ms | torch out= cpu1 ms | native/torch cpu1"
          " | numpy/torch cpu1 |")
    print("|---" * 11 + "|")
    rng = np.random.default_rng(0)
    for name in a.dtypes.split(","):
        dt = _dtype(name.strip())
        x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dt)
        for variant in ("stable", "log"):
            r = bench_fast(x, variant, repeat, not a.no_numpy)
            g = r.get
            print(f"| {name} | {variant} | {ms(g('native_wall'))} | {ms(g('numpy_wall'))} | "
                  f"{ms(g('torch_wall'))} | {ratio(g('native_wall'), g('torch_wall'))} | "
                  f"{ratio(g('numpy_wall'), g('torch_wall'))} | {ms(g('native_cpu1'))} | "
                  f"{ms(g('torch_cpu1'))} | {ratio(g('native_cpu1'), g('torch_cpu1'))} | "
                  f"{ratio(g('numpy_cpu1'), g('torch_cpu1'))} |", flush=True)
        del x
    if a.no_online:
        return 0
    orows = max(1, rows // 4)
    print(f"\n# online variant, shape ({orows}, {a.cols}), median of {repeat}\n")
    print("| dtype | native wall ms | native cpu1 ms | numpy cpu1 ms | native/numpy cpu1"
          " | accurate stable cpu1 ms | online/stable cpu1 |")
    print("|---" * 7 + "|")
    for name in a.dtypes.split(","):
        dt = _dtype(name.strip())
        x = (rng.standard_normal((orows, a.cols), dtype=np.float32) * 3).astype(dt)
        r = bench_online(x, repeat, not a.no_numpy)
        g = r.get
        print(f"| {name} | {ms(g('native_wall'))} | {ms(g('native_cpu1'))} | "
              f"{ms(g('numpy_cpu1'))} | {ratio(g('native_cpu1'), g('numpy_cpu1'))} | "
              f"{ms(g('stable_cpu1'))} | {ratio(g('native_cpu1'), g('stable_cpu1'))} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
