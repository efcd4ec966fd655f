"""CSV/TSV end to end through the CLI (issue 13): MB/s wall and MB per CPU-second.

Run from the repository root:

    python bench/csv.py                 # ~200 MB files under bench/out/ (a few minutes)
    python bench/csv.py --quick         # ~20 MB files: a smoke run
    python bench/csv.py --exact-check   # also the 10M-value bit-exactness check
    python bench/csv.py --threshold     # exact vs polars engine by file size

Each case runs ``smx softmax`` in a child process ``--repeat`` times; the
table shows the median wall time as MB/s (the machine's load changes it) and
MB per CPU-second of the child (user + system, all threads: the stable
figure; 300 MB/s on 2 cores needs >= 150 MB/CPU-s) and its peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
sys.path.insert(0, ROOT)

from smx_cli.io import csv_engine  # noqa: E402


def run(args: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one ``smx`` child process.

    The peak is the child's own VmHWM (ru_maxrss of a child starts at its
    parent's peak)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    code = ("import resource, runpy, sys; sys.argv = ['smx'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('smx_cli', run_name='__main__')\n"
            "finally:\n    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
            "    print(hwm[0].split()[1] if hwm else 0, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"smx {' '.join(args)} failed: {r.stderr}")
    rss = int(r.stderr.strip().splitlines()[-1]) / 1024
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rss


def make_files(quick: bool) -> dict[str, str]:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    scale = 10 if quick else 1
    shapes = {"tall": (200_000 // scale, 100), "wide": (2000 // scale, 10_000)}
    paths = {}
    for name, shape in shapes.items():
        path = os.path.join(OUT, f"{name}{'-quick' if quick else ''}.csv")
        npy = path[:-4] + ".npy"
        if not os.path.exists(path):
            x = (rng.standard_normal(shape) * 3).astype(np.float32)
            np.save(npy, x)
            with open(path, "wb") as fh:
                for s in range(0, shape[0], 5000):
                    fh.write(csv_engine.format_rows(x[s:s + 5000], engine="fast"))
        paths[name], paths[name + ".npy"] = path, npy
    small = os.path.join(OUT, "small.csv")
    with open(small, "w") as fh:
        fh.write("".join(",".join(f"{v:.4f}" for v in r) + "\n" for r in rng.normal(size=(10, 5))))
    paths["small"] = small
    return paths


def case(name: str, args: list[str], mb: float, repeat: int, env=None) -> dict:
    runs = [run(args, env) for _ in range(repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    return {"case": name, "MB": mb, "wall s": wall, "MB/s": mb / wall, "CPU s": cpu,
            "MB/CPU-s": mb / cpu, "peak MB": max(r[2] for r in runs)}


def bench(quick: bool, repeat: int) -> list[dict]:
    p = make_files(quick)
    out = lambda ext: os.path.join(OUT, "result" + ext)  # noqa: E731
    mb = lambda path: os.path.getsize(path) / 1e6  # noqa: E731
    rows = [
        case("tall csv -> npy (MB read)", ["softmax", p["tall"], "-o", out(".npy")],
             mb(p["tall"]), repeat),
        case("wide csv -> npy (MB read)", ["softmax", p["wide"], "-o", out(".npy")],
             mb(p["wide"]), repeat),
    ]
    r = case("tall npy -> csv (MB written)", ["softmax", p["tall.npy"], "-o", out(".csv")],
             0, repeat)
    written = mb(out(".csv"))
    r.update({"MB": written, "MB/s": written / r["wall s"], "MB/CPU-s": written / r["CPU s"]})
    rows.append(r)
    rows.append(case("tall csv -> csv (MB read)", ["softmax", p["tall"], "-o", out(".csv")],
                     mb(p["tall"]), repeat))
    rows.append(case("small.csv start-up (table)", ["softmax", p["small"]], mb(p["small"]),
                     max(repeat, 5)))
    return rows


def threshold(repeat: int) -> list[dict]:
    """CPU seconds of the exact parser vs polars (import included) by file size."""
    rows = []
    rng = np.random.default_rng(1)
    os.makedirs(OUT, exist_ok=True)
    for mb_size in (1, 2, 4, 8):
        n = int(mb_size * 1e6 / (100 * 11))
        path = os.path.join(OUT, f"t{mb_size}.csv")
        with open(path, "wb") as fh:
            fh.write(csv_engine.format_rows(rng.normal(size=(n, 100)).astype(np.float32),
                                            engine="exact"))
        for engine in ("exact", "fast"):
            r = case(f"{mb_size} MB csv -> npy, {engine}",
                     ["softmax", path, "-o", os.path.join(OUT, "t.npy")],
                     os.path.getsize(path) / 1e6, repeat, {csv_engine.ENGINE_ENV: engine})
            rows.append(r)
    return rows


def exact_check(n: int = 10_000_000) -> None:
    """Every value of an n-value random file reads back bit-exactly on both paths."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_csv_engine import midpoint_tokens, random_values

    for dtype in (np.float64, np.float32):
        x = random_values(n, dtype, seed=11).reshape(-1, 100)
        path = os.path.join(OUT, "exact.csv")
        with open(path, "wb") as fh:
            for s in range(0, len(x), 10_000):
                fh.write(csv_engine.format_rows(x[s:s + 10_000], engine="fast"))
            tokens, want = midpoint_tokens(100_000, seed=5)
            k = len(tokens) // 100 * 100
            fh.write("".join(",".join(tokens[i:i + 100]) + "\n"
                             for i in range(0, k, 100)).encode())
        ref = np.concatenate([x.astype(dtype), want[:k].reshape(-1, 100).astype(dtype)]) \
            if dtype == np.float32 else None
        for engine in ("fast", "exact"):
            t = time.process_time()
            got = np.concatenate([v for v, _ in csv_engine.iter_blocks(path, engine=engine,
                                                                        dtype=dtype)])
            ok = got[:len(x)].tobytes() == x.tobytes()
            if ref is not None:
                ok = ok and got.tobytes() == ref.tobytes()
            print(f"exactness {np.dtype(dtype).name:8s} {engine:5s}: {got.size:,} values "
                  f"{'bit-exact' if ok else 'MISMATCH'} ({time.process_time() - t:.1f} CPU s)")
            if not ok:
                raise SystemExit(1)


def show(rows: list[dict]) -> None:
    cols = ["case", "MB", "MB/s", "MB/CPU-s", "wall s", "CPU s", "peak MB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = [r["case"]] + [f"{r[c]:.0f}" if c not in ("wall s", "CPU s") else f"{r[c]:.2f}"
                               for c in cols[1:]]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~20 MB files (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--exact-check", action="store_true", help="the 10M-value exactness check")
    ap.add_argument("--threshold", action="store_true", help="exact vs polars by file size")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    show(bench(args.quick, args.repeat))
    if args.threshold:
        show(threshold(args.repeat))
    if args.exact_check:
        exact_check(1_000_000 if args.quick else 10_000_000)


if __name__ == "__main__":
    main()
