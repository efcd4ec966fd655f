"""``python -m smx_cli`` runs the ``smx`` command."""
try:
    from smx_cli.cli import main
except KeyboardInterrupt:  # Ctrl-C while loading: no traceback
    import sys

    sys.stderr.write("smx: interrupted\n")
    raise SystemExit(130) from None

if __name__ == "__main__":  # pragma: no cover
    main()
