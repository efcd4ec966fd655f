"""smx benchmarks: speed ratios against scipy, numpy, np.copyto and torch, plus peak memory.

Run from the repository root:

    python bench/run.py               # the full suite (several minutes, ~6 GB of RAM)
    python bench/run.py --quick       # small shapes: a smoke run
    python bench/run.py --only softmax,xent --markdown

Timings are medians of repeated runs taken side by side in one process, so
ratios are comparable even where absolute times vary between machines.
Peak memory is measured in a fresh child process (ru_maxrss) per case.
End-to-end CLI runs (``--e2e``) generate a large NPY and CSV file under
bench/out/ and time ``smx softmax FILE -o OUT`` against a plain blocked copy.
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
sys.path.insert(0, ROOT)

import smx_cli  # noqa: E402
from smx_cli.core.softmax import compute  # noqa: E402
from smx_cli.core.xent import cross_entropy  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:  # torch is optional
    torch = None

try:
    import scipy.special as sps  # noqa: E402
except ImportError:
    sps = None


def median_ms(fn, repeat: int, min_time: float = 0.2) -> float:
    fn()  # warm up
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def numpy_naive(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def numpy_naive_log(x):
    return np.log(numpy_naive(x))


def softmax_cases(quick: bool):
    if quick:
        return [("f32 256x2048", (256, 2048), np.float32), ("f32 2000x10", (2000, 10), np.float32),
                ("f64 128x1000", (128, 1000), np.float64)]
    return [("f32 4096x32000", (4096, 32000), np.float32),
            ("f64 4096x32000", (4096, 32000), np.float64),
            ("f32 100000x10", (100000, 10), np.float32),
            ("f64 100000x10", (100000, 10), np.float64),
            ("f32 1000x1000", (1000, 1000), np.float32),
            ("f64 1000x1000", (1000, 1000), np.float64)]


def bench_softmax(quick: bool, repeat: int, log: bool = False):
    rows = []
    for name, shape, dt in softmax_cases(quick):
        x = np.random.default_rng(0).normal(0, 3, shape).astype(dt)
        variant = "log" if log else "stable"
        res = {"case": ("log_softmax " if log else "softmax ") + name}
        res["smx"] = median_ms(lambda: compute(x, variant), repeat)
        out = np.empty_like(x)
        res["smx out="] = median_ms(lambda: compute(x, variant, out=out), repeat)
        res["smx fast"] = median_ms(lambda: compute(x, variant, fast=True), repeat)
        res["smx fast out="] = median_ms(lambda: compute(x, variant, fast=True, out=out), repeat)
        res["np.copyto"] = median_ms(lambda: np.copyto(out, x), repeat)
        res["numpy naive"] = median_ms(lambda: (numpy_naive_log if log else numpy_naive)(x), repeat)
        if sps is not None:
            fn = sps.log_softmax if log else sps.softmax
            res["scipy"] = median_ms(lambda: fn(x, axis=-1), max(1, repeat // 2))
        if torch is not None:
            xt = torch.from_numpy(x)
            tfn = torch.log_softmax if log else torch.softmax
            ot = torch.empty_like(xt)
            res["torch"] = median_ms(lambda: tfn(xt, -1), repeat)
            res["torch out="] = median_ms(lambda: tfn(xt, -1, out=ot), repeat)
        rows.append(res)
    return rows


def bench_xent(quick: bool, repeat: int):
    shape = (256, 2048) if quick else (4096, 32000)
    x = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    y = np.random.default_rng(1).integers(0, shape[1], shape[0])
    res = {"case": f"xent f32 {shape[0]}x{shape[1]}"}
    res["smx"] = median_ms(lambda: cross_entropy(x, y), repeat)
    if sps is not None:
        res["scipy"] = median_ms(
            lambda: -np.mean(sps.log_softmax(x, axis=-1)[np.arange(len(y)), y]), max(1, repeat // 2))
    if torch is not None:
        import torch.nn.functional as F

        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        res["torch"] = median_ms(lambda: F.cross_entropy(xt, yt), repeat)
    return [res]


_PEAK_CHILD = r"""
import resource, sys, json, numpy as np
kind, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
x = np.empty((n, c), dtype=np.float32)
for s in range(0, n, 256):
    x[s:s + 256] = rng.standard_normal((min(256, n - s), c), dtype=np.float32)
y = np.random.default_rng(1).integers(0, c, n)
def _kb(key):  # VmHWM/VmRSS: ru_maxrss of a forked child starts at its parent's peak
    return int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1])
base = _kb("VmHWM")
if kind == "smx-xent":
    from smx_cli.core.xent import cross_entropy; cross_entropy(x, y)
elif kind == "torch-xent":
    import torch, torch.nn.functional as F; base = _kb("VmHWM")
    F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y))
elif kind == "smx-softmax":
    from smx_cli.core.softmax import compute; compute(x)
elif kind == "smx-softmax-fast":
    from smx_cli.core.softmax import compute; compute(x, fast=True)
elif kind == "torch-softmax":
    import torch; base = _kb("VmHWM")
    torch.softmax(torch.from_numpy(x), -1)
peak = _kb("VmHWM")
print(json.dumps({"extra_mb": (peak - base) / 1024}))
"""


def peak_extra_mb(kind: str, n: int, c: int) -> float:
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, kind, str(n), str(c)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)["extra_mb"]


def bench_memory(quick: bool):
    n, c = (256, 2048) if quick else (4096, 32000)
    rows = []
    for kind in ("smx-xent", "torch-xent", "smx-softmax", "smx-softmax-fast", "torch-softmax"):
        if kind.startswith("torch") and torch is None:
            continue
        rows.append({"case": f"{kind} {n}x{c} peak extra MB", "MB": peak_extra_mb(kind, n, c)})
    return rows


_TIMED_CHILD = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_mb": ru.ru_maxrss / 1024}))
"""

# the speed floor of a stream: read and write the file in 16 MB blocks, fsync at the end
# (smx's outputs are fsynced too), in a fresh process like the smx run
_COPY = r"""
import os, sys
buf = bytearray(16 << 20)
mv = memoryview(buf)
with open(sys.argv[1], "rb") as fi, open(sys.argv[2], "wb") as fo:
    while True:
        got = fi.readinto(buf)
        if not got:
            break
        fo.write(mv[:got])
    fo.flush()
    os.fsync(fo.fileno())
"""


def timed(argv: list[str]) -> dict:
    """Wall and CPU time (s) and peak RSS (MB) of one fresh child running ``argv``."""
    out = subprocess.run([sys.executable, "-c", _TIMED_CHILD, *argv],
                         check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads(out.stdout)


def run_cli(args: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one smx run, measured by a fresh parent."""
    res = timed([sys.executable, "-m", "smx_cli", *args])
    return res["wall"], res["peak_mb"]


def stream_vs_copy(src: str, out_dir: str, smx_args: list[str], repeat: int) -> dict:
    """Medians of ``smx <args> src -o OUT.npy`` and of the blocked copy, run alternately.

    Each run writes a new file (the previous output is removed first); the page
    cache holds the input (it is read once before).
    """
    with open(src, "rb") as fh:
        while fh.read(64 << 20):
            pass
    dst = os.path.join(out_dir, "stream-out.npy")
    copies, runs = [], []
    for _ in range(repeat):
        for argv, into in (([sys.executable, "-c", _COPY, src, dst], copies),
                           ([sys.executable, "-m", "smx_cli", *smx_args[:1], src, *smx_args[1:],
                             "-o", dst, "-q"], runs)):
            if os.path.exists(dst):
                os.remove(dst)
            into.append(timed(argv))
    os.remove(dst)
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "peak_mb")}
    copy = {k: statistics.median(r[k] for r in copies) for k in ("wall", "cpu")}
    return {"s": med["wall"], "copy s": copy["wall"], "ratio": med["wall"] / copy["wall"],
            "cpu s": med["cpu"], "copy cpu s": copy["cpu"], "peak RSS MB": med["peak_mb"],
            "runs": repeat}


def bench_e2e(quick: bool):
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    n, c = (2000, 1000) if quick else (12800, 32000)  # 1.6 GB of float32
    npy = os.path.join(out_dir, "big.npy")
    if not os.path.exists(npy) or os.path.getsize(npy) < n * c * 4:
        mm = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(n, c))
        rng = np.random.default_rng(0)
        for s in range(0, n, 512):
            mm[s:s + 512] = rng.normal(0, 3, (min(512, n - s), c)).astype(np.float32)
        del mm
    row = stream_vs_copy(npy, out_dir, ["softmax"], 1 if quick else 3)
    rows.append({"case": f"smx softmax NPY {os.path.getsize(npy) / 1e9:.2f} GB -o NPY", **row})
    csv_rows = 2000 if quick else 64000
    csv_path = os.path.join(out_dir, "big.csv")
    if not os.path.exists(csv_path) or os.path.getsize(csv_path) < csv_rows * 200 * 8:
        x = np.random.default_rng(2).normal(0, 3, (csv_rows, 200)).astype(np.float32)
        with open(csv_path, "w") as fh:
            fh.write(smx_cli.io.csv_text(x))
    size_mb = os.path.getsize(csv_path) / 1e6
    wall, peak = run_cli(["softmax", csv_path, "-o", os.path.join(out_dir, "probs.csv"), "--format", "csv"])
    rows.append({"case": f"smx softmax CSV {size_mb:.0f} MB -o CSV", "s": wall,
                 "MB/s": size_mb / wall, "peak RSS MB": peak})
    for args, label in ((["--help"], "smx --help"),
                        (["softmax", os.path.join(ROOT, "samples", "seeds.csv")], "smx softmax 4-row CSV")):
        times = [run_cli(args)[0] for _ in range(5)]
        rows.append({"case": f"start-up: {label}", "ms": statistics.median(times) * 1e3})
    return rows


_STREAM_CHILD = r"""
import json, resource, sys, time, os
import numpy as np
from smx_cli.io import stream
from smx_cli.core.softmax import compute
kind, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if kind == "copy":
    stream.blocked_copy(src, dst)
elif kind == "npy":
    stream.stream_npy(src, dst, lambda xb: compute(xb).values)
elif kind == "npy-fast":
    stream.stream_npy(src, dst, lambda xb: compute(xb, fast=True).values)
elif kind == "csv-read":
    rows = sum(len(b) for b in stream.iter_csv_blocks(src, block_bytes=16 << 20))
elif kind == "csv-write":
    x = np.concatenate(list(stream.iter_csv_blocks(src)))
    x = x.astype(np.float32)
    t0 = time.perf_counter()
    stream.write_csv_blocks(dst, (x[i:i + 20000] for i in range(0, len(x), 20000)))
elif kind == "csv-csv":
    stream.stream_csv(src, dst, lambda b: compute(b.astype(np.float32)).values)
wall = time.perf_counter() - t0
# VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's peak
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"wall": wall, "peak_mb": int(hwm) / 1024}))
"""


def stream_child(kind: str, src: str, dst: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _STREAM_CHILD, kind, src, dst],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    res = json.loads(out.stdout)
    return res["wall"], res["peak_mb"]


def bench_stream(quick: bool):
    """The streaming engine (smx_cli.io.stream) on the e2e files, each in a fresh process."""
    out_dir = os.path.join(HERE, "out")
    npy, csv_path = os.path.join(out_dir, "big.npy"), os.path.join(out_dir, "big.csv")
    rows = []
    if os.path.exists(npy):
        gb = os.path.getsize(npy) / 1e9
        copy_s, copy_mb = min((stream_child("copy", npy, os.path.join(out_dir, "copy.npy"))
                               for _ in range(2)), key=lambda r: r[0])
        rows.append({"case": f"blocked copy NPY {gb:.2f} GB", "s": copy_s, "peak RSS MB": copy_mb})
        for kind in ("npy", "npy-fast"):
            wall, peak = stream_child(kind, npy, os.path.join(out_dir, "probs.npy"))
            rows.append({"case": f"stream_npy softmax{' fast' if 'fast' in kind else ''} {gb:.2f} GB",
                         "s": wall, "ratio vs copy": wall / copy_s, "peak RSS MB": peak})
    if os.path.exists(csv_path):
        mb = os.path.getsize(csv_path) / 1e6
        for kind in ("csv-read", "csv-write", "csv-csv"):
            wall, peak = stream_child(kind, csv_path, os.path.join(out_dir, "probs.csv"))
            rows.append({"case": f"{kind} {mb:.0f} MB", "s": wall, "MB/s": mb / wall,
                         "peak RSS MB": peak})
    return rows


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_rows(title: str, rows: list[dict], markdown: bool):
    if not rows:
        return
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    ratio_cols = [k for k in cols if k not in ("case", "smx") and not k.startswith("smx ")
                  and "smx" in rows[0] and
                  all(isinstance(r.get(k), float) for r in rows)]
    if "smx" in cols:
        for r in rows:
            for k in ratio_cols:
                if k in r and r[k]:
                    r[f"smx/{k}"] = r["smx"] / r[k]
            if "smx fast" in r:
                for k in ("torch", "np.copyto", "scipy"):
                    if k in r:
                        r[f"fast/{k}"] = r["smx fast"] / r[k]
            if "smx out=" in r and "torch out=" in r:
                r["out=/torch out="] = r["smx out="] / r["torch out="]
                r["fast out=/torch out="] = r["smx fast out="] / r["torch out="]
            if "smx fast out=" in r and "np.copyto" in r:
                r["fast out=/np.copyto"] = r["smx fast out="] / r["np.copyto"]
        cols = []
        for r in rows:
            cols += [k for k in r if k not in cols]
    print(f"\n## {title}\n")
    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(fmt(r.get(k, "")) for k in cols) + " |")
    else:
        widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        for r in rows:
            print("  ".join(fmt(r.get(c, "")).rjust(w) for c, w in zip(cols, widths)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="softmax,log,xent,memory",
                    help="comma list of: softmax, log, xent, memory, e2e (e2e includes the "
                         "streaming engine)")
    ap.add_argument("--e2e", action="store_true", help="also the end-to-end CLI runs")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if args.e2e:
        only.add("e2e")
    print(f"# smx bench ({'quick' if args.quick else 'full'}): numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed'}, {os.cpu_count()} cores; "
          "times in ms (medians), ratios smx/other (< 1: smx faster)")
    if "softmax" in only:
        print_rows("softmax", bench_softmax(args.quick, args.repeat), args.markdown)
    if "log" in only:
        print_rows("log-softmax", bench_softmax(args.quick, args.repeat, log=True), args.markdown)
    if "xent" in only:
        print_rows("cross-entropy", bench_xent(args.quick, args.repeat), args.markdown)
    if "memory" in only:
        print_rows("peak memory", bench_memory(args.quick), args.markdown)
    if "e2e" in only:
        print_rows("end to end", bench_e2e(args.quick), args.markdown)
        print_rows("streaming engine (smx_cli.io.stream called from Python)",
                   bench_stream(args.quick), args.markdown)


if __name__ == "__main__":
    main()
