"""The benchmark entry point runs (a smoke run: no timing is asserted here)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_prints_ratio_tables():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick",
                          "--repeat", "1", "--only", "softmax,xent"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "## softmax" in out.stdout and "## cross-entropy" in out.stdout
    assert "smx/scipy" in out.stdout
