"""bench/lm.py runs end to end on a tiny shape (a smoke run: no timing is asserted)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_lm_smoke():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "lm.py"), "--shape",
                          "1,16,64", "--repeat", "1"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "| smx xent + sequence report |" in out.stdout and "peak RSS" in out.stdout
    torch_line = [ln for ln in out.stdout.splitlines() if ln.startswith("torch: ")]
    loss_line = [ln for ln in out.stdout.splitlines() if ln.startswith("loss ")]
    if torch_line:  # the loss agrees with torch's on the same file
        smx = float(loss_line[0].split()[1].rstrip(","))
        assert abs(smx - float(torch_line[0].split()[1])) <= 1e-12 * abs(smx)
