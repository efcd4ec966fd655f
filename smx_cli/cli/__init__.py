"""The command line: click commands that parse options, call one library function
and print. The only layer that imports click, prints, or exits.

Importing this package is cheap: ``main`` imports click and the commands only
when it runs, inside its own guard, so a Ctrl-C in the first milliseconds is
"smx: interrupted" (exit 130), never a KeyboardInterrupt traceback.
"""
import _signal  # builtin: importing it here costs nothing and takes no import lock later
import _thread
import sys

__all__ = ["cli", "main"]


def redeliver(handler) -> None:
    """Call the signal handler ``handler`` from a SIGALRM 1 ms from now: outside
    the context Python could not raise in (see :func:`interrupt_hook`), as if the
    signal had arrived a moment later. Without interval timers (Windows) the main
    thread is interrupted at once (Python then prints that the hook raised)."""
    if hasattr(_signal, "setitimer"):
        _signal.signal(_signal.SIGALRM, handler)
        _signal.setitimer(_signal.ITIMER_REAL, 0.001)
    else:  # pragma: no cover - no setitimer
        _thread.interrupt_main()


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def interrupt_hook(unraisable, default=sys.unraisablehook) -> None:
    """``sys.unraisablehook`` of the command: a Ctrl-C that lands in code whose
    exceptions Python cannot raise (a weakref callback such as importlib's
    module-lock cleanup, a ``__del__``) would be printed as "Exception ignored
    in ..." with a traceback and then lost, the command running on. It is
    raised again a moment later (:func:`redeliver`), so the command stops with
    "smx: interrupted" (130). Anything else goes to Python's own hook."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        redeliver(_raise_interrupt)
        return
    default(unraisable)


def main() -> None:
    """Console-script entry point (see :func:`smx_cli.cli.app.main`)."""
    sys.unraisablehook = interrupt_hook
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
