"""Benchmark of the compiled core (smx_cli.core.native) against torch, scipy and numpy.

Run from the repository root after building the extension in place
(``python setup.py build_ext --inplace``):

    python bench/native.py              # the issue's shapes (needs ~6 GB of RAM)
    python bench/native.py --quick      # 1024-row wide case, fewer repeats
    python bench/native.py --repeat 7 --wide-rows 4096
    python bench/native.py --diag       # the diagnostics panel's cost beside the kernel's

Each cell is the median of ``--repeat`` runs taken side by side in one process.
Two clocks:

* wall: ``time.perf_counter`` with the default threads (native: min(cpu, 2);
  torch: its default intra-op threads), allocating calls for torch/scipy/numpy
  (what a user calls) and the native kernel writing into a fresh ``np.empty``
  (so both pay the first-touch page faults of a new output);
* cpu1: ``time.process_time`` of the same call with ONE thread (native
  threads=1, torch.set_num_threads(1)) writing into a preallocated output
  (torch ``out=``): the per-core cost, stable on a noisy machine.

``--diag`` prints instead, per shape, format and kind, the kernel's cpu1 time
(``native.softmax_rows``, one thread) beside the diagnostics panel's
(``diagnose(x, compute(x))`` on one thread: what ``smx softmax`` adds to the
kernel) and their ratio.

Ratios are native / other (< 1: native is faster). float16 and bfloat16 rows
(``--dtypes``) run on the compiled core's single-word path like float32; torch
gets the same bits as a torch.float16 / torch.bfloat16 tensor.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from smx_cli.core import native  # noqa: E402

from smx_cli.core.softmax import compute as _compute  # noqa: E402


def compute(*args, **kwargs):
    """The numpy reference engine (compute() runs the native one when it is built)."""
    with native.numpy_engine():
        return _compute(*args, **kwargs)

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import scipy.special as sps
except ImportError:  # pragma: no cover
    sps = None


def median_time(fn, repeat: int, clock) -> float:
    fn()  # warm up (and first-touch any cached buffers)
    ts = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts)


def fmt_ms(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _torch_tensor(x: np.ndarray):
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def bench_softmax(shape, dtype, kind, repeat, with_numpy, with_scipy):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    with_scipy = with_scipy and x.dtype.name != "bfloat16"
    out = np.empty_like(x)
    nat_threads = native.default_threads()
    r = {}
    r["native_wall"] = median_time(
        lambda: native.softmax_rows(x, np.empty_like(x), kind=kind, threads=nat_threads),
        repeat, time.perf_counter)
    r["native_cpu1"] = median_time(lambda: native.softmax_rows(x, out, kind=kind, threads=1),
                                   repeat, time.process_time)
    if torch is not None:
        t = _torch_tensor(x)
        to = torch.empty_like(t)
        f = torch.softmax if kind == "prob" else torch.log_softmax
        torch.set_num_threads(os.cpu_count() or 1)
        r["torch_wall"] = median_time(lambda: f(t, -1), repeat, time.perf_counter)
        r["torch_out_wall"] = median_time(lambda: f(t, -1, out=to), repeat, time.perf_counter)
        torch.set_num_threads(1)
        r["torch_cpu1"] = median_time(lambda: f(t, -1, out=to), repeat, time.process_time)
        torch.set_num_threads(os.cpu_count() or 1)
    if with_scipy and sps is not None:
        f = sps.softmax if kind == "prob" else sps.log_softmax
        r["scipy_wall"] = median_time(lambda: f(x, axis=-1), max(1, repeat // 2),
                                      time.perf_counter)
    if with_numpy:
        variant = "stable" if kind == "prob" else "log"
        r["numpy_wall"] = median_time(lambda: compute(x, variant), max(1, repeat // 2),
                                      time.perf_counter)
    return r


def bench_diag(shape, dtype, kind, repeat):
    """cpu1 of the kernel and of the diagnostics panel over its result."""
    from smx_cli.analysis.diagnostics import diagnose
    from smx_cli.core import kernels
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    out = np.empty_like(x)
    res = _compute(x, "stable" if kind == "prob" else "log")
    kernel = median_time(lambda: native.softmax_rows(x, out, kind=kind, threads=1), repeat,
                         time.process_time)
    saved = kernels.default_threads
    kernels.default_threads = lambda: 1  # the panel's pieces on one thread
    try:
        panel = median_time(lambda: diagnose(x, res), repeat, time.process_time)
    finally:
        kernels.default_threads = saved
    return kernel, panel


def print_diag(shapes, dtypes, repeat):
    print("| case | kernel cpu1 ms | panel cpu1 ms | panel/kernel |")
    print("|---|---|---|---|")
    for shape in shapes:
        for dtype in dtypes:
            for kind in ("prob", "logprob"):
                kernel, panel = bench_diag(shape, dtype, kind, repeat)
                name = f"{'softmax' if kind == 'prob' else 'log_softmax'} " \
                       f"{np.dtype(dtype).name} {shape[0]}x{shape[1]}"
                print(f"| {name} | {fmt_ms(kernel)} | {fmt_ms(panel)} | "
                      f"{panel / kernel:.0%} |", flush=True)


def bench_xent(shape, dtype, repeat):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    r = {}
    r["native_wall"] = median_time(lambda: native.xent_rows(x, y), repeat, time.perf_counter)
    r["native_cpu1"] = median_time(lambda: native.xent_rows(x, y, threads=1), repeat,
                                   time.process_time)
    res = native.xent_rows(x, y)
    r["extra_mb"] = sum(a.nbytes for a in res.values()) / 2 ** 20
    if torch is not None:
        t = torch.from_numpy(x)
        ty = torch.from_numpy(y)
        F = torch.nn.functional
        torch.set_num_threads(os.cpu_count() or 1)
        r["torch_wall"] = median_time(lambda: F.cross_entropy(t, ty, reduction="none"), repeat,
                                      time.perf_counter)
        torch.set_num_threads(1)
        r["torch_cpu1"] = median_time(lambda: F.cross_entropy(t, ty, reduction="none"), repeat,
                                      time.process_time)
        torch.set_num_threads(os.cpu_count() or 1)
    return r


def bench_vjp(shape, dtype, kind, repeat):
    """native.vjp_rows (recomputes p from x, then the fused VJP) against torch's backward
    kernel given the forward output (torch._softmax_backward_data /
    _log_softmax_backward_data) and against torch's forward + backward."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape)  # vjp_rows takes g as float64
    gx = g.astype(dtype)
    out = np.empty_like(x)
    k = "softmax" if kind == "prob" else "log"
    r = {}
    r["native_wall"] = median_time(lambda: native.vjp_rows(x, g, np.empty_like(x), kind=k),
                                   repeat, time.perf_counter)
    r["native_cpu1"] = median_time(lambda: native.vjp_rows(x, g, out, kind=k, threads=1),
                                   repeat, time.process_time)
    if torch is not None:
        t, tg = _torch_tensor(x), _torch_tensor(gx)
        f = torch.softmax if kind == "prob" else torch.log_softmax
        bw = torch._softmax_backward_data if kind == "prob" else torch._log_softmax_backward_data
        y = f(t, -1)

        def both():
            return bw(tg, f(t, -1), -1, t.dtype)
        for threads, clock, tag in ((os.cpu_count() or 1, time.perf_counter, "wall"),
                                    (1, time.process_time, "cpu1")):
            torch.set_num_threads(threads)
            r[f"torch_bw_{tag}"] = median_time(lambda: bw(tg, y, -1, t.dtype), repeat, clock)
            r[f"torch_fwbw_{tag}"] = median_time(both, repeat, clock)
        torch.set_num_threads(os.cpu_count() or 1)
    return r


def print_vjp(shape, dtype_name, repeat):
    print("| VJP case | native wall ms | torch bw wall ms | torch fw+bw wall ms | native cpu1 ms "
          "| torch bw cpu1 ms | torch fw+bw cpu1 ms | native/torch bw cpu1 | "
          "native/torch fw+bw cpu1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("prob", "logprob"):
        r = bench_vjp(shape, _dtype(dtype_name), kind, repeat)
        name = f"{'softmax' if kind == 'prob' else 'log_softmax'}_vjp {dtype_name} " \
               f"{shape[0]}x{shape[1]}"
        print(f"| {name} | {fmt_ms(r['native_wall'])} | {fmt_ms(r.get('torch_bw_wall'))} | "
              f"{fmt_ms(r.get('torch_fwbw_wall'))} | {fmt_ms(r['native_cpu1'])} | "
              f"{fmt_ms(r.get('torch_bw_cpu1'))} | {fmt_ms(r.get('torch_fwbw_cpu1'))} | "
              f"{fmt_ratio(r['native_cpu1'], r.get('torch_bw_cpu1'))} | "
              f"{fmt_ratio(r['native_cpu1'], r.get('torch_fwbw_cpu1'))} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--wide-rows", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="1024 wide rows, 3 repeats")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy reference")
    ap.add_argument("--no-scipy", action="store_true")
    ap.add_argument("--dtypes", default="float16,bfloat16,float32,float64",
                    help="comma-separated softmax dtypes")
    ap.add_argument("--xent-dtypes", default="float32,float64")
    ap.add_argument("--vjp-dtypes", default="float32,float64")
    ap.add_argument("--only-vjp", action="store_true", help="only the VJP table")
    ap.add_argument("--only-softmax", action="store_true",
                    help="only the softmax / log-softmax table (no cross-entropy, no VJP)")
    ap.add_argument("--diag", action="store_true",
                    help="only the diagnostics panel's cpu1 cost beside the kernel's")
    ap.add_argument("--shapes", default=None,
                    help="comma-separated NxC softmax shapes instead of the issue's, e.g. "
                         "100000x10,100000x32")
    args = ap.parse_args(argv)
    if not native.available():
        print(f"native extension not built: {native.why_unavailable()}")
        return 1
    if args.quick:
        args.wide_rows, args.repeat = 1024, 3
    shapes = [(args.wide_rows, 32000), (1000, 1000), (100000, 10)]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    print(f"engine {native.engine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__ if torch else 'missing'}, medians of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    if args.diag:
        print_diag(shapes, [_dtype(d) for d in args.dtypes.split(",")], args.repeat)
        return 0
    if args.only_vjp:
        for d in args.vjp_dtypes.split(","):
            print_vjp((args.wide_rows, 32000), d, args.repeat)
        return 0
    print("| case | native wall ms | torch wall ms | native/torch wall | native/torch out= wall "
          "| native cpu1 ms | torch out= cpu1 ms | native/torch cpu1 | native/scipy | native/numpy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for dtype in [_dtype(d) for d in args.dtypes.split(",")]:
            for kind in ("prob", "logprob"):
                r = bench_softmax(shape, dtype, kind, args.repeat, not args.no_numpy,
                                  not args.no_scipy)
                name = f"{'softmax' if kind == 'prob' else 'log_softmax'} {np.dtype(dtype).name} " \
                       f"{shape[0]}x{shape[1]}"
                print(f"| {name} | {fmt_ms(r['native_wall'])} | {fmt_ms(r.get('torch_wall'))} | "
                      f"{fmt_ratio(r['native_wall'], r.get('torch_wall'))} | "
                      f"{fmt_ratio(r['native_wall'], r.get('torch_out_wall'))} | "
                      f"{fmt_ms(r['native_cpu1'])} | {fmt_ms(r.get('torch_cpu1'))} | "
                      f"{fmt_ratio(r['native_cpu1'], r.get('torch_cpu1'))} | "
                      f"{fmt_ratio(r['native_wall'], r.get('scipy_wall'))} | "
                      f"{fmt_ratio(r['native_wall'], r.get('numpy_wall'))} |", flush=True)
    if args.only_softmax:
        return 0
    shape = (args.wide_rows, 32000)
    for xdt in args.xent_dtypes.split(","):
        print_xent(shape, xdt, args.repeat)
    print()
    for d in args.vjp_dtypes.split(","):
        print_vjp(shape, d, args.repeat)
    return 0


def print_xent(shape, dtype_name, repeat):
    r = bench_xent(shape, _dtype(dtype_name), repeat)
    print(f"| cross_entropy {dtype_name} {shape[0]}x{shape[1]} (class idx; extra "
          f"{r['extra_mb']:.2f} MB) | {fmt_ms(r['native_wall'])} | {fmt_ms(r.get('torch_wall'))} | "
          f"{fmt_ratio(r['native_wall'], r.get('torch_wall'))} | - | {fmt_ms(r['native_cpu1'])} | "
          f"{fmt_ms(r.get('torch_cpu1'))} | {fmt_ratio(r['native_cpu1'], r.get('torch_cpu1'))} "
          f"| - | - |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
