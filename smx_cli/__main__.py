"""``python -m smx_cli`` runs the ``smx`` command."""
from smx_cli.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
