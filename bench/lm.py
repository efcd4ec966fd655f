"""Language-model logits end to end: ``smx xent`` with the sequence report on a big safetensors file.

Run from the repository root:

    python bench/lm.py                  # (8, 2048, 32000) bfloat16: a 1.05 GB file
    python bench/lm.py --shape 2,256,32000 --repeat 1   # a smoke run

The file (bench/out/lm_B_T_V.safetensors, with its ids) is generated once,
in blocks, with logits shaped like a language model's (a few likely tokens
over a heavy-tailed rest). Reported, each the median of ``--repeat`` runs in
fresh child processes, with the file in the page cache (one warm-up read):

- the time to read the file once (Python ``readinto`` in 16 MB blocks, the
  reader smx itself uses), wall and CPU;
- ``smx xent FILE --labels IDS --shift-labels --format json`` wall and CPU
  time, peak RSS (ru_maxrss of the child);
- their ratio, and the loss, checked against PyTorch on a slice when torch
  is installed (the whole file would need 4 GB in float32).
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

from smx_cli.io import safetensors as st  # noqa: E402


def make_file(path: str, ids_path: str, shape, zipf_scale: float, noise: float,
              seed: int = 0) -> None:
    """Write (B, T, V) bfloat16 logits block by block (never the whole array in memory)."""
    import ml_dtypes

    b, t, v = shape
    rng = np.random.default_rng(seed)
    nbytes = b * t * v * 2
    header = {"logits": {"dtype": "BF16", "shape": [b, t, v], "data_offsets": [0, nbytes]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    ids = rng.integers(0, v, size=(b, t))
    zipf = -np.log(np.arange(1, v + 1))  # a heavy tail: token rank r gets -log r
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
        for i in range(b):
            for t0 in range(0, t, 256):
                rows = min(256, t - t0)
                x = (zipf[rng.permutation(v)][None, :] * zipf_scale
                     + rng.standard_normal((rows, v)) * noise)
                # the model is right about half the time: the next token gets a boost
                hit = rng.random(rows) < 0.5
                nxt = ids[i, t0 + 1:t0 + rows + 1]
                r = np.arange(len(nxt))
                x[r[hit[:len(nxt)]], nxt[hit[:len(nxt)]]] += 12.0
                fh.write(x.astype(ml_dtypes.bfloat16).tobytes())
    os.replace(tmp, path)
    st.write(ids_path, {"input_ids": ids.astype(np.int64)})


def _child(code: str) -> dict:
    """Run ``code`` in a fresh Python: its own timing of the work, peak RSS, and the whole run."""
    w = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PRE + code + _POST], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    total = time.perf_counter() - w
    if out.returncode:
        raise SystemExit(out.stderr)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["total"] = total
    return res


# the work is timed inside the child (interpreter start and imports excluded; reported
# separately as "total"); peak RSS is the child's VmHWM, which exec resets (ru_maxrss
# would carry the parent's size over a fork)
_PRE = "import time as _t, json as _j\nimport numpy\n_w, _c = _t.perf_counter(), _t.process_time()\n"
_POST = """
_e = globals().get('_END') or (_t.perf_counter(), _t.process_time())
_res = dict(_RESULT, wall=_e[0] - _w, cpu=_e[1] - _c)
for _line in open('/proc/self/status'):
    if _line.startswith('VmHWM:'):
        _res['peak_mb'] = int(_line.split()[1]) / 1024
print(_j.dumps(_res))
"""

READ = """
import numpy as np
buf = np.empty(16 << 20, np.uint8)
with open({path!r}, 'rb', buffering=0) as fh:
    while fh.readinto(buf): pass
_RESULT = {{}}
"""

XENT = """
import json, sys
from smx_cli.cli.app import main
sys.argv = ['smx', 'xent', {path!r}, '--labels', {ids!r}, '--shift-labels', '--format', 'json',
            '-o', {out!r}]
try:
    main()
except SystemExit as e:
    if e.code: raise
_END = (_t.perf_counter(), _t.process_time())  # the report's checks below are not timed
d = json.load(open({out!r}))
import numpy as np
top_p = np.array([rec['top_p_tokens'] for rec in d['per_token']], dtype=float)
_RESULT = {{'loss': d['loss'], 'ppl': d['corpus']['perplexity'],
           'top_p': float(np.median(top_p)),
           'entropy': d['mean_entropy']}}
"""


def check_against_torch(path: str, ids_path: str, b: int, t: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    x = st.load(path)
    ids = st.load(ids_path)
    rows = min(b, 1)
    xt = torch.from_numpy(np.asarray(x[:rows, :-1], dtype=np.float32)).double()
    y = torch.from_numpy(np.array(ids[:rows, 1:]))
    return float(torch.nn.functional.cross_entropy(xt.reshape(-1, xt.shape[-1]), y.reshape(-1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="8,2048,32000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--zipf", type=float, default=1.8,
                    help="logit of the rank-r token: -ZIPF log r (1.8: entropy ~2 nats, the "
                         "90 %% of the mass in ~10 tokens; 1.0: a flat heavy tail, ~4000)")
    ap.add_argument("--noise", type=float, default=1.0, help="Gaussian noise on every logit")
    args = ap.parse_args()
    b, t, v = (int(s) for s in args.shape.split(","))
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    stem = f"lm_{b}_{t}_{v}_z{args.zipf:g}_n{args.noise:g}"
    path = os.path.join(out_dir, stem + ".safetensors")
    ids = os.path.join(out_dir, stem + "_ids.safetensors")
    if not (os.path.exists(path) and os.path.exists(ids)):
        print(f"writing {path} ...", file=sys.stderr)
        make_file(path, ids, (b, t, v), args.zipf, args.noise)
    size = os.path.getsize(path)
    out = os.path.join(out_dir, "lm_report.json")
    _child(READ.format(path=path))  # warm the page cache
    reads = [_child(READ.format(path=path)) for _ in range(args.repeat)]
    runs = [_child(XENT.format(path=path, ids=ids, out=out)) for _ in range(args.repeat)]

    def med(rs, k):
        return statistics.median(r[k] for r in rs)

    print(f"## smx xent --shift-labels on ({b}, {t}, {v}) bfloat16 ({size / 1e9:.2f} GB)\n")
    print("| | wall s | CPU s | peak RSS MB | whole process s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| read the file once | {med(reads, 'wall'):.2f} | {med(reads, 'cpu'):.2f} | "
          f"{med(reads, 'peak_mb'):.0f} | {med(reads, 'total'):.2f} |")
    print(f"| smx xent + sequence report | {med(runs, 'wall'):.2f} | {med(runs, 'cpu'):.2f} | "
          f"{med(runs, 'peak_mb'):.0f} | {med(runs, 'total'):.2f} |")
    print(f"\nratio (wall): {med(runs, 'wall') / med(reads, 'wall'):.1f}x, "
          f"(CPU): {med(runs, 'cpu') / max(med(reads, 'cpu'), 1e-9):.1f}x the read; "
          f"repeats: {args.repeat}; cores: {os.cpu_count()}")
    print(f"loss {runs[0]['loss']!r}, corpus perplexity {runs[0]['ppl']!r}, median top-90% "
          f"size {runs[0]['top_p']:g} tokens, mean entropy {runs[0]['entropy']:.3g} nats")
    if b == 1:
        ref = check_against_torch(path, ids, b, t)
        if ref is not None:
            print(f"torch: {ref!r}")


if __name__ == "__main__":
    main()
