"""The ``smx`` command group: the only module that exits.

Each command lives in its own ``cmd_*`` module and is registered here.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from smx_cli.errors import EXIT_BAD_DATA, EXIT_INTERRUPTED

EPILOG = """\b
Exit codes:
  0    success
  1    bad data (unreadable or malformed input, mismatched labels),
       or NaN/inf in the result under --strict
  2    usage error (unknown option, bad option value)
  130  interrupted (Ctrl-C)

\b
Errors are one line on stderr naming the file, line/column or index.
Colour follows the terminal; NO_COLOR=1 turns it off."""


# name -> (module, attribute, one-line help). Commands are imported only when
# run or asked for help, so `smx --help` does not pay for numpy and rich.
COMMANDS = {
    "softmax": ("smx_cli.cmd_softmax", "softmax_cmd",
                "Softmax of each row of logits, with diagnostics and gradients."),
    "xent": ("smx_cli.cmd_xent", "xent_cmd",
             "Cross-entropy against true labels, with PyTorch's semantics."),
    "compare-stability": ("smx_cli.cmd_compare", "compare_cmd",
                          "Every softmax variant x precision against the exact result."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module on first use."""

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


def main() -> None:
    """Console-script entry point: run ``cli`` and map every outcome to an exit code."""
    try:
        rv = cli.main(prog_name="smx", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("smx: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("smx: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # the reader went away (smx ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except MemoryError:
        click.echo("Error: out of memory; try a smaller input or fewer rows", err=True)
        sys.exit(EXIT_BAD_DATA)
    except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
        if os.environ.get("SMX_DEBUG"):
            raise
        msg = " ".join(str(exc).split())
        click.echo(f"Error: internal error: {type(exc).__name__}: {msg} "
                   "(please report it; SMX_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_BAD_DATA)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(rv if isinstance(rv, int) else 0)
