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
@click.version_option(package_name="smx-cli", prog_name="smx")
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


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated


def main() -> None:
    """Console-script entry point: run ``cli`` and map every outcome to an exit code.

    0 ok (a closed stdout included), 1 bad data or a --strict failure (one
    ``Error:`` line on stderr), 2 usage (one line), 130 Ctrl-C, 143 SIGTERM;
    an unexpected exception is one line too, never a traceback (unless
    ``SMX_DEBUG=1``).
    """
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread: leave the default
        pass
    if not sys.warnoptions and not os.environ.get("SMX_DEBUG"):
        # numpy's floating-point warnings (e.g. casting a signalling NaN) are
        # not for users: NaN/inf are counted in the diagnostics, and stderr
        # holds one line per error. SMX_DEBUG=1 or python -W shows them.
        warnings.simplefilter("ignore")
    stdout = sys.stdout
    try:
        rv = cli.main(prog_name="smx", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("smx: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        click.echo("smx: terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    except click.UsageError as exc:
        click.echo(f"Error: {_usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except (StdoutClosed, BrokenPipeError):
        # the reader went away (smx ... | head): stop quietly
        _quiet_stdout()
        sys.exit(EXIT_OK)
    except SystemExit as exc:
        # click turns a broken pipe it meets itself into exit 1 after replacing
        # sys.stdout with a wrapper that ignores flushes: a closed pipe, not an error
        if exc.code == 1 and sys.stdout is not stdout:
            _quiet_stdout()
            sys.exit(EXIT_OK)
        raise
    except MemoryError:
        click.echo("Error: out of memory; try a smaller input (--rows, or split the file)",
                   err=True)
        sys.exit(EXIT_BAD_DATA)
    except OSError as exc:
        # an I/O failure outside the readers and writers (they raise SmxError):
        # e.g. stdout on a full disk
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"Error: input/output error{where}: {exc.strerror or _one_line(exc)}; "
                   "check the disk and the files named", err=True)
        sys.exit(EXIT_BAD_DATA)
    except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
        if os.environ.get("SMX_DEBUG"):
            raise
        click.echo(f"Error: internal error: {type(exc).__name__}: {_one_line(exc)} "
                   "(please report it; SMX_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_BAD_DATA)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as exc:
        click.echo(f"Error: cannot write to standard output ({exc.strerror or exc})", err=True)
        sys.exit(EXIT_BAD_DATA)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
