"""The 16/32-bit softmax / log-softmax of the compiled core, per core (1 thread,
CPU time), against torch ``out=`` with one thread, and optionally against another
build of the extension in the same process (``--old PATH`` to a copy of an older
``_smx_native*.so``), measured alternately so both see the same machine load.

    python3 bench/lowp_softmax.py [--rows 1024] [--cols 32000] [--repeat 7] [--old SO]

Prints, per format and kind, the median CPU ms of each and the ratios to torch.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from smx_cli.core import native  # noqa: E402


def _load_old(path: str):
    """the extension at ``path`` as a module of its own (its init function is
    PyInit__smx_native: the last name component must stay ``_smx_native``)"""
    spec = importlib.util.spec_from_file_location("smx_old_build._smx_native", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cpu_median(fns, repeat):
    """fns: list of callables, run alternately; median process_time of each"""
    ts = [[] for _ in fns]
    for f in fns:
        f()  # warm up (page faults of the output)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t0 = time.process_time()
            f()
            ts[i].append(time.process_time() - t0)
    return [float(np.median(t)) for t in ts]


def f(v: float) -> str:
    return f"{v * 1e3:.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--old", default=None, help="path of an older _smx_native*.so to compare")
    ap.add_argument("--dtypes", default="float32,float16,bfloat16")
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    old = _load_old(args.old) if args.old else None
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.rows, args.cols)) * 3.0
    print(f"# {args.rows} x {args.cols}, 1 thread, CPU ms (median of {args.repeat}), "
          f"isa {native._ext.isa()}, T = {args.temperature}")
    print("| case | new ms | old ms | torch out= ms | new/torch | old/torch | new/old |")
    print("|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        if name == "bfloat16":
            import ml_dtypes
            dt, tdt = np.dtype(ml_dtypes.bfloat16), torch.bfloat16
        else:
            dt, tdt = np.dtype(name), getattr(torch, name)
        x = base.astype(dt)
        xr = native._raw(x)
        code = native._dt(x)
        tx = torch.from_numpy(base.astype(np.float32)).to(tdt)
        for kind, k in (("prob", 0), ("logprob", 1)):
            out = np.empty_like(x)
            orr = native._raw(out)
            to = torch.empty_like(tx)
            tf = torch.softmax if kind == "prob" else torch.log_softmax
            t = args.temperature
            ti = tx / t if t != 1.0 else tx
            fns = [lambda: native._ext.softmax(xr, orr, code, x.shape[0], x.shape[1], k, t, 0,
                                               0, x.shape[0], None),
                   lambda: tf(ti, -1, out=to)]
            if old is not None:
                fns.append(lambda: old.softmax(xr, orr, code, x.shape[0], x.shape[1], k, t, 0,
                                               0, x.shape[0], None))
            ts = _cpu_median(fns, args.repeat)
            new, tor = ts[0], ts[1]
            od = ts[2] if old is not None else None
            print(f"| {'softmax' if k == 0 else 'log_softmax'} {name} | {f(new)} | "
                  f"{f(od) if od else '-'} | {f(tor)} | {new / tor:.2f} | "
                  f"{od / tor if od else float('nan'):.2f} | "
                  f"{new / od if od else float('nan'):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
