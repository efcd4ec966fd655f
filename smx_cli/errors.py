"""Errors smx raises for bad input, and the exit codes the CLI documents.

Exit codes
----------
0   success
1   bad data (unreadable or malformed input, mismatched labels), or a result
    with NaN/inf under ``--strict``
2   usage error (unknown option, bad option value) -- click's own code
130 interrupted (Ctrl-C, SIGINT)
143 terminated (SIGTERM)

Every error is one line on stderr, ``Error: <file>: <what>; <what to do>``.
A closed stdout (``smx ... | head -1``) is not an error: smx stops quietly
with status 0.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class SmxError(ValueError):
    """A one-line, user-facing error: what is wrong, where, and what to do.

    The numerics and I/O modules raise it (a ``ValueError``, so library users
    catch it as they would numpy's or scipy's); only the CLI turns it into
    ``Error: <message>`` on stderr and the exit code :attr:`exit_code`.

    Examples
    --------
    >>> try:
    ...     raise SmxError("x.csv: line 3,   column 2:  not a number")
    ... except ValueError as exc:
    ...     print(exc)
    x.csv: line 3, column 2: not a number
    """

    exit_code = EXIT_BAD_DATA

    def __init__(self, message: str):
        # one line, always: a message that spans lines breaks log scrapers
        self.message = " ".join(str(message).split())
        super().__init__(self.message)

    def format_message(self) -> str:
        return self.message


class StdoutClosed(Exception):
    """The reader of stdout went away (``smx ... | head -1``): stop quietly.

    Deliberately not an ``OSError``: click turns a broken pipe into exit 1,
    and smx exits 0 without a message instead.
    """


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that cleanup (temporary files) runs."""
