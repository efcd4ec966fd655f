"""Pin a compiled module's CPU variant inside a test (its ``set_isa`` hook).

Shared by the tests of the compiled core (``smx_cli.core.native``'s extension) and of the
fast kernels (``smx_cli.core.native_fast``'s). Not a test module: the test files import it.
"""
from __future__ import annotations

from contextlib import contextmanager

from smx_cli.core import native

NAMES = ("baseline", "avx2", "avx512")


def isas(ext=None) -> list[str]:
    """The variants this CPU runs, baseline first; [] without the extension.

    ``ext`` is the compiled module (default: the accurate core's).
    """
    ext = native._ext if ext is None else ext
    if ext is None:
        return []
    return list(NAMES[:NAMES.index(ext.isa()) + 1])


@contextmanager
def isa(name: str, ext=None):
    """Run the block on variant ``name`` of ``ext`` (default: the accurate core's)."""
    ext = native._ext if ext is None else ext
    old = ext.set_isa(name)
    try:
        yield
    finally:
        ext.set_isa(old)
