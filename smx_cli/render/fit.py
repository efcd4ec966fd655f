"""Fitting tables to the terminal without ever cutting a number.

rich squeezes a table wider than the terminal by truncating cells to
``0.9…``: a number that is no longer the number. smx instead chooses what to
show (fewer columns, fewer top-k classes), says what it left out, and as a
last resort lets a cell fold onto a second line -- never an ellipsis.
"""
from __future__ import annotations

from typing import Callable, Iterable

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def needed_width(console: Console, renderable) -> int:
    """Columns ``renderable`` takes unsqueezed (rich clamps measures to the terminal)."""
    return Measurement.get(console, console.options.update_width(10**5), renderable).maximum


def never_cut(table: Table) -> Table:
    """Make every cell of ``table`` fold instead of ending in an ellipsis.

    Examples
    --------
    >>> from rich.console import Console
    >>> t = Table("x"); t.add_row("123456789012")
    >>> c = Console(width=8, file=open("/dev/null", "w"))
    >>> with c.capture() as cap:
    ...     c.print(never_cut(t))
    >>> "…" in cap.get()
    False
    """
    for col in table.columns:
        col.overflow = "fold"
        col.no_wrap = False
    return table


def first_fitting(console: Console, candidates: Iterable[tuple[object, Callable[[], Table]]]
                  ) -> tuple[object, Table]:
    """The first ``(key, build())`` whose table fits ``console``; else the last one.

    Every table returned has :func:`never_cut` applied.
    """
    chosen = None
    for key, build in candidates:
        table = build()
        chosen = (key, table)
        if needed_width(console, table) <= console.width:
            break
    if chosen is None:
        raise ValueError("no candidate table")
    return chosen[0], never_cut(chosen[1])
