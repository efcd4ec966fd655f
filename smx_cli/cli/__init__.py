"""The command line: click commands that parse options, call one library function
and print. The only layer that imports click, prints, or exits."""
from smx_cli.cli.app import cli, main

__all__ = ["cli", "main"]
