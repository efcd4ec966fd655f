"""Hostile inputs, round two (issue 15): one test (or more) per class of defect.

Outputs that lose data or land in the wrong place, crafted NPY headers that
would make the work unbounded, silently wrong results, tracebacks, exit codes.
Tests that need root (a read-only mount, a PID namespace) skip with a reason
otherwise.
"""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from smx_cli.cli.app import cli

from smx_cli import io as smx_io
from test_errors import SEEDS, _temp_fd, env, fails, ok, write
from test_errors import big_npy  # noqa: F401 - a fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=60, **kw) -> subprocess.CompletedProcess:
    """``python -m smx_cli ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "smx_cli", *map(str, args)],
                          capture_output=True, text=True, env=env(), timeout=timeout, **kw)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return lines[0]


def crafted_npy(path, shape, *, descr="<f8", version=(1, 0), data=b"") -> str:
    """An NPY file whose header says whatever we like."""
    h = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    size_len = 2 if version[0] == 1 else 4
    pad = (64 - (6 + 2 + size_len + len(h) + 1) % 64) % 64
    h = h + b" " * pad + b"\n"
    size = struct.pack("<H" if size_len == 2 else "<I", len(h))
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY" + bytes(version) + size + h + data)
    return str(path)


@pytest.fixture
def x_csv(tmp_path):
    return write(tmp_path, "x.csv", "1,2,3\n4,5,6\n")


# ----------------------------------------------------------------------------
# outputs: validated before anything is written, all or none


def test_second_output_is_checked_before_the_first_is_written(tmp_path, x_csv):
    g = tmp_path / "g.npy"
    np.save(g, np.arange(3.0))
    old = g.read_bytes()
    # an unknown extension is a usage error (exit 2, issue 14), found before any writing
    r = CliRunner().invoke(cli, ["softmax", str(x_csv), "--upstream", str(x_csv), "--grad-out",
                                 str(g), "-o", str(tmp_path / "o.xyz")])
    assert r.exit_code == 2 and "cannot tell the format" in r.stderr
    assert g.read_bytes() == old
    y = write(tmp_path, "y.csv", "0\n1\n")
    r = CliRunner().invoke(cli, ["xent", str(x_csv), "--labels", str(y), "--grad-out", str(g),
                                 "-o", str(tmp_path / "o.xyz")])
    assert r.exit_code == 2 and "cannot tell the format" in r.stderr   # as softmax
    assert g.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["g.npy", "x.csv", "y.csv"]


def test_a_failing_second_write_leaves_the_first_output_untouched(tmp_path, x_csv, monkeypatch):
    g, o = tmp_path / "g.csv", tmp_path / "o.csv"
    g.write_text("old g\n")
    o.write_text("old o\n")
    calls = []

    def full_on_second(fh, data, chunk=0):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        fh.write(bytes(data))
    monkeypatch.setattr(smx_io, "write_chunks", full_on_second)
    msg = fails("softmax", x_csv, "--upstream", x_csv, "--grad-out", g, "-o", o)
    assert "No space left" in msg and "nothing was written" in msg
    assert g.read_text() == "old g\n" and o.read_text() == "old o\n"
    assert sorted(os.listdir(tmp_path)) == ["g.csv", "o.csv", "x.csv"]


@pytest.mark.parametrize("spell", ["./{}", "{}/../d/{}", "link", "hardlink"])
def test_two_outputs_naming_one_file_are_refused(tmp_path, x_csv, spell):
    d = tmp_path / "d"
    d.mkdir()
    same = d / "same.npy"
    np.save(same, np.arange(2.0))
    old = same.read_bytes()
    if spell == "link":
        other = d / "link.npy"
        other.symlink_to("same.npy")
    elif spell == "hardlink":
        other = d / "hard.npy"
        os.link(same, other)
    else:
        other = spell.format("same.npy") if "/" not in spell[2:] else str(d) + "/../d/same.npy"
    cwd = os.getcwd()
    os.chdir(d)
    try:
        msg = fails("softmax", x_csv, "--upstream", x_csv, "--grad-out", "same.npy",
                    "-o", other)
    finally:
        os.chdir(cwd)
    assert "name the same file" in msg
    assert same.read_bytes() == old


def test_output_symlink_is_written_through(tmp_path, x_csv):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    os.chmod(real, 0o640)
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    ok("softmax", x_csv, "-o", link)
    assert os.path.islink(link) and os.readlink(link) == "real.csv"  # the link stays
    assert real.read_text().startswith("0.09003057317038046,")
    assert (os.stat(real).st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "real.csv", "x.csv"]


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "link",
                                    "dirlink"])
def test_standard_streams_are_refused_as_outputs(tmp_path, x_csv, target):
    """With stdout redirected to a regular file, -o /dev/stdout used to replace the
    link (as root: /dev/stdout itself) with a regular file."""
    if target == "link":
        target = tmp_path / "to-stdout.csv"
        target.symlink_to("/dev/stdout")
    elif target == "dirlink":  # a link among the directories: tmp/me -> /proc/self
        (tmp_path / "me").symlink_to("/proc/self")
        target = tmp_path / "me" / "fd" / "1"
    captured = tmp_path / "captured.txt"
    with open(captured, "w") as out:
        r = subprocess.run([sys.executable, "-m", "smx_cli", "softmax", x_csv, "-o", str(target),
                            "--format", "csv"], stdout=out, stderr=subprocess.PIPE, text=True,
                           env=env(), timeout=60)
    assert r.returncode == 1 and "standard stream" in one_error_line(r)
    if str(target).startswith(str(tmp_path)):
        assert os.path.islink(target) or os.path.islink(tmp_path / "me")
    assert os.path.islink("/dev/stdout") or not os.path.exists("/dev/stdout") \
        or not os.path.isfile("/dev/stdout")
    assert captured.read_text() == ""


def test_fifo_output_is_refused(tmp_path, x_csv):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in fails("softmax", x_csv, "-o", fifo)


def test_trailing_slash_names_a_directory(tmp_path, x_csv):
    msg = fails("softmax", x_csv, "-o", str(tmp_path / "newdir") + "/")
    assert "names a directory" in msg
    assert sorted(os.listdir(tmp_path)) == ["x.csv"]  # no file called newdir


def _read_only_dir(tmp_path):
    """A directory no one can create files in: a read-only tmpfs (root) or mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("root, but no mount(8) to make a read-only tmpfs")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
        return d, lambda: subprocess.run(["umount", str(d)], check=False)
    os.chmod(d, 0o555)
    return d, lambda: os.chmod(d, 0o755)


def test_unwritable_output_is_refused_before_computing(tmp_path, x_csv, monkeypatch):
    from smx_cli.core import registry

    def no_compute(*a, **k):
        raise AssertionError("computed before checking the output")
    d, cleanup = _read_only_dir(tmp_path)
    try:
        monkeypatch.setattr(registry, "run", no_compute)
        msg = fails("softmax", x_csv, "-o", d / "p.csv")
        assert "cannot write in" in msg and "choose another -o" in msg
        assert os.listdir(d) == []
    finally:
        cleanup()


# ----------------------------------------------------------------------------
# the stale-temp sweep removes only provable leftovers


def test_sweep_spares_user_files_and_locked_temps(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    user = tmp_path / ".smx-999999-notes.part"
    user.write_text("my notes")
    lookalike = tmp_path / f".smx-{dead}-abcdefgh.part"  # mkstemp-like, no tag: not ours
    lookalike.write_text("also mine")
    wrong_tag = tmp_path / f".smx-{dead}-{'0' * 16}{'f' * 8}.part"  # our pattern, bad tag
    wrong_tag.write_text("mine too")
    # a live writer whose PID means nothing here (another PID namespace, another
    # NFS client): the name holds a dead PID, but the file is locked
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, fcntl; from smx_cli.io import write as w\n"
         f"name = '.smx-{dead}-' + '0' * 16 + w._temp_tag('{dead}', '0' * 16) + '.part'\n"
         f"fd = os.open(os.path.join({str(tmp_path)!r}, name), os.O_WRONLY | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); print(name, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        live = holder.stdout.readline().strip()
        assert smx_io.is_temp_name(live)
        ok("softmax", SEEDS, "-o", tmp_path / "out.csv")
        assert sorted(os.listdir(tmp_path)) == sorted(
            [user.name, lookalike.name, wrong_tag.name, live, "out.csv"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # once the writer is gone (its lock with it), its file is a leftover
    ok("softmax", SEEDS, "-o", tmp_path / "out2.csv")
    assert live not in os.listdir(tmp_path)
    assert user.exists() and lookalike.exists() and wrong_tag.exists()


WRITER = """
import os, sys, time
from smx_cli.io import atomic_output
with atomic_output(sys.argv[1], "w") as fh:
    fh.write("inside\\n")
    fh.flush()
    print(os.getpid(), flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.01)
    fh.write("done\\n")
"""


def test_sweep_spares_a_live_writer_in_another_pid_namespace(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a PID namespace")
    outside_free = 54321
    try:
        os.kill(outside_free, 0)
        pytest.skip(f"PID {outside_free} is in use here")
    except ProcessLookupError:
        pass
    except PermissionError:
        pytest.skip(f"PID {outside_free} is in use here")
    out, go = tmp_path / "theirs.csv", tmp_path / "go"
    script = write(tmp_path, "writer.py", WRITER)
    # inside the namespace the writer gets PID 54321, which is dead out here
    shell = (f"echo {outside_free - 1} > /proc/sys/kernel/ns_last_pid && "
             f"{sys.executable} {script} {out} {go}; true")
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", shell],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**env(), "PYTHONPATH": ROOT})
    try:
        pid = p.stdout.readline().strip()
        if not pid:
            pytest.skip(f"no PID namespace here: {p.stderr.read().strip()}")
        temps = [n for n in os.listdir(tmp_path) if smx_io.is_temp_name(n)]
        assert temps and temps[0].startswith(f".smx-{pid}-"), temps
        ok("softmax", SEEDS, "-o", tmp_path / "ours.csv")  # sweeps tmp_path
        assert temps[0] in os.listdir(tmp_path)
        go.write_text("")
        assert p.wait(timeout=60) == 0, p.stderr.read()
        assert out.read_text() == "inside\ndone\n"
    finally:
        go.write_text("")
        if p.poll() is None:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------
# NPY headers: the work is bounded by the data, both paths refuse the same files


@pytest.mark.parametrize("shape", [(10**15, 0), (10**11, 0), (0, 10**12), (0, 10**9, 10**9)])
@pytest.mark.parametrize("extra", [[], ["--format", "csv"], ["-o", "out.npy"],
                                   ["--variant", "sparsemax"]])
def test_empty_array_claiming_huge_shape_is_bounded(tmp_path, shape, extra):
    f = crafted_npy(tmp_path / "e.npy", shape)
    r = run("softmax", f, *extra, timeout=30, cwd=tmp_path)
    assert r.returncode == 1 and "no values" in one_error_line(r)
    assert sorted(os.listdir(tmp_path)) == ["e.npy"]


def test_modest_empty_arrays_are_an_empty_result(tmp_path):
    for shape in [(3, 0), (0, 3), (1000, 0), (0, 100_000)]:
        f = crafted_npy(tmp_path / "e.npy", shape)
        ok("softmax", f, "-o", tmp_path / "p.npy")
        assert np.load(tmp_path / "p.npy").shape == shape
    np.save(tmp_path / "y.npy", np.zeros(0, dtype=np.int64))
    xent = run("xent", crafted_npy(tmp_path / "e.npy", (0, 5)), "--labels", tmp_path / "y.npy")
    assert xent.returncode == 0, xent.stderr


@pytest.mark.parametrize("shape, what", [((-2, 3), "negative"), ((2, -3), "negative"),
                                         ((1,) * 70, "70 dimensions"),
                                         ((2**40, 2**40), "more elements")])
@pytest.mark.parametrize("cmd", ["softmax-whole", "softmax-stream", "xent"])
def test_crafted_shapes_are_refused_on_every_path(tmp_path, shape, what, cmd):
    f = crafted_npy(tmp_path / "bad.npy", shape, data=b"\0" * 8)
    labels = write(tmp_path, "y.csv", "0\n1\n")
    args = {"softmax-whole": ["softmax", f, "--format", "csv"],
            "softmax-stream": ["softmax", f, "-o", tmp_path / "out.npy"],
            "xent": ["xent", f, "--labels", labels]}[cmd]
    r = run(*args)
    assert r.returncode == 1 and what in one_error_line(r)
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("version", [(9, 0), (1, 7), (0, 0)])
@pytest.mark.parametrize("cmd", ["softmax-whole", "softmax-stream", "xent"])
def test_unknown_npy_version_is_refused_on_every_path(tmp_path, version, cmd):
    data = np.arange(6.0).tobytes()
    f = crafted_npy(tmp_path / "v.npy", (3, 2), version=version, data=data)
    labels = write(tmp_path, "y.csv", "0\n1\n0\n")
    args = {"softmax-whole": ["softmax", f, "--format", "csv"],
            "softmax-stream": ["softmax", f, "-o", tmp_path / "out.npy"],
            "xent": ["xent", f, "--labels", labels]}[cmd]
    r = run(*args)
    assert r.returncode == 1 and "version" in one_error_line(r)
    assert not (tmp_path / "out.npy").exists()


def test_npz_member_too_big_for_memory_is_not_called_corrupt(tmp_path, monkeypatch):
    f = tmp_path / "big.npz"
    np.savez_compressed(f, logits=np.zeros((100, 10)))

    def no_memory(self, n=-1):
        raise MemoryError
    real_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read",
                        lambda self, n=-1: real_read(self, n) if n >= 0 else no_memory(self))
    msg = fails("softmax", f)
    assert "more than fits in memory" in msg and "corrupt" not in msg


# ----------------------------------------------------------------------------
# silently wrong results


@pytest.mark.parametrize("first", ["0x1", "1_0", "-", "+", "1e", ".", "1.5.3"])
def test_a_bad_first_label_is_not_taken_for_a_header(tmp_path, first):
    x = write(tmp_path, "x.csv", "1,2,3\n4,5,6\n7,8,9\n")
    y = write(tmp_path, "y.csv", f"{first}\n1\n2\n")
    msg = fails("xent", x, "--labels", y)
    assert "line 1" in msg and repr(first) in msg


def test_float_forms_csv_writers_never_produce_are_not_labels(tmp_path):
    x = write(tmp_path, "x.csv", "1,2,3\n4,5,6\n")
    y = write(tmp_path, "y.csv", "label\n1\n1_0\n")  # float('1_0') == 10.0
    assert "line 3" in fails("xent", x, "--labels", y)
    ok("xent", x, "--labels", write(tmp_path, "y2.csv", "label\n1\n2\n"))


def test_mask_errors_show_plain_numbers(tmp_path, x_csv):
    m = tmp_path / "m.npy"
    np.save(m, np.array([[1, 2, 1], [1, 1, 1]], dtype=np.int64))
    msg = fails("softmax", x_csv, "--mask", m)
    assert "mask value 2 at index (0, 1)" in msg and "np." not in msg
    np.save(m, np.ones((5, 3), dtype=np.int64))
    msg = fails("softmax", x_csv, "--mask", m)
    assert "np." not in msg and "(5, 3)" in msg


@pytest.mark.parametrize("rows, where", [("5,0.5\n0.2,0.8\n", "row 0, class 0: 5.0"),
                                         ("0.2,0.8\n-0.5,1.5\n", "row 1, class 0: -0.5"),
                                         ("0.2,0.8\n0.2,0.7\n", "row 1 sums to 0.9")])
def test_xent_probs_must_be_probabilities(tmp_path, rows, where):
    x = write(tmp_path, "p.csv", rows)
    y = write(tmp_path, "y.csv", "0\n1\n")
    for extra in ([], ["--strict"]):
        msg = fails("xent", x, "--labels", y, "--input-kind", "probs", *extra)
        assert msg.startswith(f"Error: {x}: {where}") and "NaN" not in msg


def test_xent_probs_streamed_names_the_row_in_the_whole_file(tmp_path, monkeypatch):
    from smx_cli.cli import xent as cmd_xent

    monkeypatch.setattr(cmd_xent, "_STREAM_BLOCK", 64)  # 4 rows of 2 float64 per block
    p = np.tile([0.25, 0.75], (10, 1))
    p[9] = [0.5, 0.6]
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "y.npy", np.zeros(10, dtype=np.int64))
    msg = fails("xent", tmp_path / "p.npy", "--labels", tmp_path / "y.npy",
                "--input-kind", "probs")
    assert "p.npy: row 9 sums to 1.1" in msg
    # rounded text output (6 significant digits) still passes
    ok("xent", write(tmp_path, "r.csv", "0.333333,0.333333,0.333333\n"), "--labels",
       write(tmp_path, "y.csv", "0\n"), "--input-kind", "probs")


# ----------------------------------------------------------------------------
# tracebacks and internal errors


@pytest.mark.parametrize("extra", [[], ["--format", "csv"], ["--format", "json"],
                                   ["-o", "out.csv"]])
def test_closed_stdout_is_no_traceback(tmp_path, x_csv, extra):
    r = subprocess.run(f'"{sys.executable}" -m smx_cli softmax "{x_csv}" '
                       + " ".join(extra) + " >&-", shell=True, capture_output=True, text=True,
                       env=env(), cwd=tmp_path, timeout=60)
    # stderr holds only the messages that go beside data (issue 14): no traceback
    assert r.returncode == 0, r.stderr
    assert all(ln.startswith(("smx: diagnostics: ", "wrote ")) for ln in r.stderr.splitlines())
    if extra and extra[0] == "-o":
        assert (tmp_path / "out.csv").read_text().startswith("0.09003057317038046,")


def test_non_ascii_names_with_an_ascii_terminal(tmp_path):
    f = tmp_path / "names.npz"
    np.savez(f, logits=np.array([[1.0, 2.0]]), classes=np.array(["café", "naïve"]))
    for extra in ([], ["--format", "json"]):
        r = subprocess.run([sys.executable, "-m", "smx_cli", "softmax", str(f), *extra],
                           capture_output=True, env={**env(), "PYTHONIOENCODING": "ascii"},
                           timeout=60)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
        assert all(ln.startswith(b"smx: diagnostics: ") for ln in r.stderr.splitlines())
        assert b"caf" in r.stdout


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15])
def test_early_sigint_is_no_traceback(delay):
    p = subprocess.Popen([sys.executable, "-m", "smx_cli", "softmax", SEEDS],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    frames = [ln for ln in err.splitlines() if ln.lstrip().startswith("File ")]
    ours = [f for f in frames if "smx_cli" in f and "smx_cli/__init__.py" not in f]
    if "init_import_site" in err or (frames and not ours):
        # the interpreter's own start-up (site.py, .pth files, runpy importing the
        # package), before any smx code can install a handler: nothing to catch
        return
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # killed by the default action before Python set its handler, interrupted, or done
    assert rc in (-signal.SIGINT, 130, 0), (rc, err)


_DROPPED = """
import builtins, sys, weakref
import smx_cli.cli as c
from smx_cli.errors import Terminated
phase, kind = sys.argv[1], {"int": KeyboardInterrupt, "term": Terminated}[sys.argv[2]]

class Obj:
    pass

def boom(ref):
    raise kind   # raised in a weakref callback: Python can only print and drop it

def drop():
    o = Obj()
    r = weakref.ref(o, boom)
    del o

if phase == "import":   # while the commands load (before smx's own handlers)
    real = builtins.__import__
    def imp(name, *a, **k):
        if name == "smx_cli.cli.app":
            builtins.__import__ = real
            drop()
        return real(name, *a, **k)
    builtins.__import__ = imp
else:                   # while a command runs (smx's handlers installed)
    import smx_cli.cli.app as app
    real_streams = app._standard_streams
    def streams():
        drop()
        real_streams()
    app._standard_streams = streams
sys.argv = ["smx", "softmax", sys.argv[3]]
c.main()
"""


@pytest.mark.parametrize("phase, kind, rc, said", [
    ("import", "int", 130, "smx: interrupted"), ("run", "int", 130, "smx: interrupted"),
    ("run", "term", 143, "smx: terminated")])
def test_signal_dropped_in_a_weakref_callback_still_stops(phase, kind, rc, said):
    """A Ctrl-C (or SIGTERM) whose exception is raised inside a weakref callback (as
    importlib's module-lock cleanup: the rare race of test_early_sigint_is_no_traceback)
    used to print "Exception ignored in ..." with a traceback, and the command ran on to
    exit 0. It now stops it as any other signal does."""
    r = subprocess.run([sys.executable, "-c", _DROPPED, phase, kind, SEEDS],
                       capture_output=True, env=env(), timeout=120)
    err = r.stderr.decode()
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert err.strip() == said and r.returncode == rc, (r.returncode, err)
    assert r.stdout == b""


def test_sigint_then_sigterm_mid_write_is_quiet(big_npy, tmp_path):  # noqa: F811
    """A second signal during shutdown used to print 'Exception ignored in
    threading._shutdown' with a traceback."""
    for attempt in range(3):
        out = tmp_path / f"out{attempt}.npy"
        p = subprocess.Popen([sys.executable, "-m", "smx_cli", "softmax", big_npy,
                              "-o", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None \
                and not _temp_fd(p.pid, str(tmp_path)):
            time.sleep(0.001)
        p.send_signal(signal.SIGINT)
        time.sleep(0.002 * (attempt + 1))
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        err = p.stderr.read().decode()
        rc = p.wait(timeout=60)
        assert "Exception ignored" not in err and "Traceback" not in err, err
        # -15: the SIGTERM landed in the interpreter's last steps, after it restored
        # the default handlers (a shell shows 143 either way)
        assert rc in (130, 143, 0, -signal.SIGTERM), (rc, err)
        assert [n for n in os.listdir(tmp_path) if n.startswith(".smx-")] == []


def test_zero_class_rows_with_every_variant_and_gradients(tmp_path):
    f = tmp_path / "e.npy"
    np.save(f, np.zeros((3, 0)))
    for variant in ("sparsemax", "entmax15", "entmax", "hardmax", "gumbel", "stable", "log"):
        ok("softmax", f, "--variant", variant, "--grad", "--check-grad")


# ----------------------------------------------------------------------------
# exit codes and messages


def test_negative_seed_is_a_usage_error(x_csv):
    r = run("softmax", x_csv, "--variant", "gumbel", "--seed", "-1")
    assert r.returncode == 2 and "'--seed'" in r.stderr
    r = run("compare-stability", "--sweep", "--seed", "-1")
    assert r.returncode == 2 and "'--seed'" in r.stderr


def test_a_huge_bad_token_is_not_echoed_in_full(tmp_path):
    token = "x" + "9" * 5_000_000
    f = write(tmp_path, "tok.csv", f"1,2\n3,{token}\n")
    r = run("softmax", f)
    line = one_error_line(r)
    assert len(line) < 500 and "line 2, column 2" in line and "9" * 200 not in line
    r = run("softmax", f, "--temperature", token[:100_000])  # argv: at most 128 KB each
    assert r.returncode == 2 and len(r.stderr) < 500


def test_out_of_memory_hint_does_not_suggest_rows(monkeypatch, capsys):
    """--rows limits the display only: suggesting it for an out-of-memory error misleads."""
    from smx_cli.cli import app

    def oom(*a, **k):
        raise MemoryError
    monkeypatch.setattr(app.cli, "main", oom)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exc:
            app.main()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "out of memory" in err and "--rows" not in err


def test_rows_table_is_written_as_it_is_rendered():
    """A closed pipe stops the rendering of a long table after about one batch."""
    from rich.console import Console
    from rich.segment import Segment

    from smx_cli.cli import emit
    from smx_cli.errors import StdoutClosed

    pulled = []

    class Lines:
        def __rich_console__(self, console, options):
            for i in range(100_000):
                pulled.append(i)
                yield Segment(f"row {i}\n")

    class Closed:
        def write(self, s):
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

    console = emit._PipeConsole(file=Closed(), width=80)  # noqa: SLF001
    assert isinstance(console, Console)
    with pytest.raises(StdoutClosed):
        emit.print_progressively(console, Lines(), batch_lines=100)
    assert len(pulled) <= 200


def test_a_signal_wrapped_by_python_is_still_an_interrupt(monkeypatch, capsys):
    # Python wraps a KeyboardInterrupt raised inside a class body's __set_name__
    # (an import under way) in RuntimeError: smx still exits 130, one line
    from smx_cli.cli import app

    def boom(*a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from exc

    monkeypatch.setattr(app.cli, "main", boom)
    monkeypatch.setattr(app.signal, "signal", lambda *a: None)  # keep pytest's handlers
    monkeypatch.setattr(app, "_standard_streams", lambda: None)
    monkeypatch.setattr(app.warnings, "simplefilter", lambda *a, **k: None)
    assert app._run() == 130
    err = capsys.readouterr().err
    assert err.strip() == "smx: interrupted"
