"""The ``smx`` command group: the only module that exits.

Each command lives in its own ``cmd_*`` module and is registered here.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings

import click

from smx_cli.cli import redeliver
from smx_cli.errors import (EXIT_BAD_DATA, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED,
                            SmxError, StdoutClosed, Terminated)

EPILOG = """\b
Exit codes:
  0    success (also when stdout is closed early: smx ... | head -1)
  1    bad data: a missing, unreadable or malformed file, mismatched
       labels or weights, an output that cannot be written; or NaN/inf
       in the result under --strict
  2    usage error (unknown option, bad option value)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM)

\b
Every error is one line on stderr: what is wrong, where (file, line and
column for text, index for arrays) and what to do. Files given with -o are
written atomically (temporary file, then rename): an interrupted run
leaves the old file or none. Colour follows the terminal; NO_COLOR=1
turns it off; SMX_DEBUG=1 shows tracebacks of internal errors."""


# name -> (module, attribute, one-line help). Commands are imported only when
# run or asked for help, so `smx --help` does not pay for numpy and rich.
COMMANDS = {
    "softmax": ("smx_cli.cli.softmax", "softmax_cmd",
                "Softmax of each row of logits, with diagnostics and gradients."),
    "xent": ("smx_cli.cli.xent", "xent_cmd",
             "Cross-entropy against true labels, with PyTorch's semantics."),
    "compare-stability": ("smx_cli.cli.compare", "compare_cmd",
                          "Every softmax variant x precision against the exact result."),
    "calibrate": ("smx_cli.cli.calibrate", "calibrate_cmd",
                  "Calibration metrics, a fitted temperature, reliability diagrams."),
}


def _show_version(ctx, value) -> None:
    """``smx --version``: the package version and which engine computes
    (the compiled core and its instruction set, or the numpy fallback)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    from smx_cli.core import native

    try:
        v = version("smx-cli")
    except PackageNotFoundError:  # a source tree
        v = "0+unknown"
    eng = native.engine()
    why = ""
    if eng == "numpy":
        why = (" (SMX_ENGINE=numpy)" if native.available()
               else " (the compiled core is not built; reinstall with a C compiler)")
    click.echo(f"smx, version {v}\nengine: {eng}{why}")
    ctx.exit()


class _CliError(click.ClickException):
    """A library error (SmxError, a ValueError) as click shows it: one line, its exit code."""

    def __init__(self, exc: SmxError):
        super().__init__(exc.message)
        self.exit_code = exc.exit_code


class LazyGroup(click.Group):
    """A click group that imports a command's module on first use and turns the
    library's errors into click's (the library itself never imports click)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SmxError as exc:
            raise _CliError(exc) from exc

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS), key=list(COMMANDS).index)

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            module, attr, _ = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EPILOG)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, param, value: _show_version(ctx, value),
              help="Show the version and the compute engine, and exit.")
def cli():
    """smx: softmax, log-softmax and cross-entropy from the shell.

    Reads logits from CSV/TSV, NPY or NPZ (or - for stdin), computes the
    chosen softmax variant accurately (within a few ulps) or emulates a
    float16/bfloat16/float32/float64 framework, and shows probabilities with
    overflow, underflow and NaN diagnostics, or writes them for the next tool.
    """


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line: click's message and where to read more."""
    msg = _one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        msg += f" (see '{ctx.command_path} --help')"
    return msg


def _no_args_help(exc: click.UsageError) -> bool:
    """Whether ``exc`` is click's "no arguments: show the help" (click >= 8.2)."""
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", None)
    return no_args is not None and isinstance(exc, no_args) and exc.ctx is not None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    """The first SIGINT/SIGTERM stops the work; later ones wait until smx exits.

    A second signal landing while the first unwinds would interrupt the
    removal of the temporary output file (SIGINT then SIGTERM a few ms apart).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _later)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def _later(signum, frame):  # noqa: ARG001 - signal handler signature
    """Ignored while cleaning up; :func:`_exit` ends the process right after."""


def _unraisable(unraisable, default=sys.unraisablehook) -> None:
    """``sys.unraisablehook`` while a command runs: the KeyboardInterrupt or
    Terminated that :func:`_on_signal` raised inside a weakref callback or a
    ``__del__`` (where Python prints "Exception ignored in ..." and drops it)
    is delivered again a moment later (:func:`smx_cli.cli.redeliver`), with
    the handler re-armed (the swallowed raise had already switched it to
    :func:`_later`)."""
    kind = unraisable.exc_type
    if kind is None or not issubclass(kind, (KeyboardInterrupt, Terminated)):
        default(unraisable)
        return
    sig = signal.SIGTERM if issubclass(kind, Terminated) else signal.SIGINT
    try:
        signal.signal(sig, _on_signal)
    except (ValueError, OSError):  # not the main thread
        pass
    redeliver(lambda signum, frame: _on_signal(sig, frame))


def _exit_now(signum, frame):  # noqa: ARG001 - signal handler signature
    os._exit(128 + signum)


def _exit(code: int) -> None:
    """Exit with ``code``; a signal from now on ends the process at once.

    Interpreter shutdown joins worker threads: a second Ctrl-C or a SIGTERM
    landing there would print "Exception ignored in threading._shutdown".
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _exit_now)
        except (ValueError, OSError):  # not the main thread
            pass
    sys.exit(code)


def _standard_streams() -> None:
    """Make fds 0-2 safe to use, and every message encodable.

    A closed stdout (``smx ... >&-``) becomes a pipe without a reader, so a
    write to it is a closed pipe: smx stops quietly as for ``| head -0``. A
    closed stdin or stderr becomes /dev/null. Without this the first file smx
    opens would get fd 1 and the table would be printed into it. Text that
    the terminal's encoding cannot show (PYTHONIOENCODING=ascii and a class
    named "café") is written with backslash escapes instead of failing.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            is_open = getattr(sys, name) is not None
        except OSError:
            is_open = False
        if is_open:
            continue
        try:
            if fd == 1:
                r, w = os.pipe()
                os.close(r)
                src = w
            else:
                src = os.open(os.devnull, os.O_RDWR)
            if src != fd:
                os.dup2(src, fd)
                os.close(src)
            setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8",  # noqa: SIM115
                                    errors="backslashreplace"))
        except OSError:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


# tokens longer than this are cut in messages (a 5 MB "number" is not echoed)
_MAX_TOKEN = 120
_MAX_MESSAGE = 2000


def _cap(text: str) -> str:
    """One line, each overlong token cut to a head and its length, the whole bounded."""
    words = []
    for w in str(text).split():
        if len(w) > _MAX_TOKEN:
            w = f"{w[:_MAX_TOKEN // 2]}...[{len(w):,} characters]"
        words.append(w)
    line = " ".join(words)
    if len(line) > _MAX_MESSAGE:
        line = f"{line[:_MAX_MESSAGE]}...[{len(line):,} characters]"
    return line


def main() -> None:
    """Console-script entry point: run ``cli`` and map every outcome to an exit code.

    0 ok (a closed stdout included), 1 bad data or a --strict failure (one
    ``Error:`` line on stderr), 2 usage (one line), 130 Ctrl-C, 143 SIGTERM;
    an unexpected exception is one line too, never a traceback (unless
    ``SMX_DEBUG=1``).
    """
    try:
        _exit(_run())
    except KeyboardInterrupt:  # landed between two handlers
        _exit(EXIT_INTERRUPTED)
    except Terminated:
        _exit(EXIT_TERMINATED)


def _signal_behind(exc: BaseException):
    """KeyboardInterrupt or Terminated when one caused ``exc`` (its __cause__ or
    __context__ chain), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return type(exc) if isinstance(exc, Terminated) else KeyboardInterrupt
        exc = exc.__cause__ or exc.__context__
    return None


def _run() -> int:
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
    except (ValueError, OSError):  # not the main thread: leave the default
        pass
    sys.unraisablehook = _unraisable
    _standard_streams()
    if not sys.warnoptions and not os.environ.get("SMX_DEBUG"):
        # numpy's floating-point warnings (e.g. casting a signalling NaN) are
        # not for users: NaN/inf are counted in the diagnostics, and stderr
        # holds one line per error. SMX_DEBUG=1 or python -W shows them.
        warnings.simplefilter("ignore")
    stdout = sys.stdout
    try:
        rv = cli.main(prog_name="smx", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _say("smx: interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _say("smx: terminated")
        return EXIT_TERMINATED
    except click.UsageError as exc:
        if _no_args_help(exc):
            # bare `smx` (or a bare group): the normal help, not an error line
            click.echo(exc.ctx.get_help())
            return EXIT_OK
        _say(f"Error: {_cap(_usage_line(exc))}")
        return exc.exit_code
    except click.ClickException as exc:
        _say(f"Error: {_cap(exc.format_message())}")
        return exc.exit_code
    except (StdoutClosed, BrokenPipeError):
        # the reader went away (smx ... | head): stop quietly
        _quiet_stdout()
        return EXIT_OK
    except SystemExit as exc:
        # click turns a broken pipe it meets itself into exit 1 after replacing
        # sys.stdout with a wrapper that ignores flushes: a closed pipe, not an error
        if exc.code == 1 and sys.stdout is not stdout:
            _quiet_stdout()
            return EXIT_OK
        raise
    except MemoryError:
        _say("Error: out of memory; give smx an NPY file with -o FILE (streamed in row "
             "blocks, bounded memory), or split the input")
        return EXIT_BAD_DATA
    except OSError as exc:
        # an I/O failure outside the readers and writers (they raise SmxError):
        # e.g. stdout on a full disk
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _say(f"Error: input/output error{where}: {_cap(exc.strerror or exc)}; "
             "check the disk and the files named")
        return EXIT_BAD_DATA
    except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
        signalled = _signal_behind(exc)
        if signalled is not None:
            # a signal landed where Python wraps what it raises (e.g. a class body's
            # __set_name__ during an import turns KeyboardInterrupt into RuntimeError)
            _say("smx: interrupted" if signalled is KeyboardInterrupt else "smx: terminated")
            return EXIT_INTERRUPTED if signalled is KeyboardInterrupt else EXIT_TERMINATED
        if os.environ.get("SMX_DEBUG"):
            raise
        _say(f"Error: internal error: {type(exc).__name__}: {_cap(exc)} "
             "(please report it; SMX_DEBUG=1 shows the traceback)")
        return EXIT_BAD_DATA
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as exc:
        _say(f"Error: cannot write to standard output ({exc.strerror or exc})")
        return EXIT_BAD_DATA
    return rv if isinstance(rv, int) else EXIT_OK


def _say(line: str) -> None:
    """One line on stderr (never fails: a closed or odd stderr is not a second error)."""
    try:
        click.echo(line, err=True)
    except (OSError, UnicodeError, ValueError):
        pass
