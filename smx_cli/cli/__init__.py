"""The command line: click commands that parse options, call one library function
and print. The only layer that imports click, prints, or exits.

Importing this package is cheap: ``main`` imports click and the commands only
when it runs, inside its own guard, so a Ctrl-C in the first milliseconds is
"smx: interrupted" (exit 130), never a KeyboardInterrupt traceback.
"""
import sys

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point (see :func:`smx_cli.cli.app.main`)."""
    try:
        from smx_cli.cli.app import main as run
    except KeyboardInterrupt:
        try:
            sys.stderr.write("smx: interrupted\n")
        except (AttributeError, OSError):  # stderr closed
            pass
        raise SystemExit(130) from None
    run()


def __getattr__(name):  # PEP 562: ``from smx_cli.cli import cli``
    if name == "cli":
        from smx_cli.cli.app import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
