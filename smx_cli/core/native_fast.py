"""Wrapper of ``smx_cli.core._smx_fast``: the compiled fast mode and online normaliser.

The extension is optional, like :mod:`smx_cli.core.native`: :func:`available`
says whether it was built; :func:`engine` is "numpy" when it is missing, when
``SMX_ENGINE=numpy`` is set or inside :func:`smx_cli.core.native.numpy_engine`,
else "native-avx512" / "native-avx2" / "native-baseline" (the CPU variant
picked at import). Rows are cut into contiguous blocks run on Python threads
(the kernels release the GIL); results do not depend on the thread count.

Fast mode (:func:`fast_rows`), the plain max-shift in the input's own
arithmetic (float16 / bfloat16 in float32, rounded once), stated bounds
(derived in _smx_fast.c, asserted by ``tests/test_native_fast.py`` against the
long double / mpmath reference on adversarial rows in the four formats, on
every CPU variant), with q = (x - max) / T and k = 1 at temperature 1, 3
otherwise (the rounding of the division, and in float32 arithmetic that of T
itself; float64 needs only 2):

* probabilities, for entries whose exact value is a normal number:
  float32 within 4 + k |q| ulps, float64 within 8 + k |q| ulps, float16 within
  0.5 + (4 + k |q|) / 2**13 ulps and bfloat16 within 0.5 + (4 + k |q|) / 2**16
  ulps (one rounding of the float32 value);
* log-probabilities: |error| <= (5 + k (|q| + ln C)) eps max(|logp|, 1) for
  float32 and float64 (eps the format's machine epsilon; the dominant entry
  only to absolute accuracy), and 16-bit formats within 0.5 ulp of the format
  plus that float32 error.

At temperature 1 and C >= 4 these are inside the numpy fast kernels' measured
bound 2 + |q| + log2(C) (:data:`smx_cli.core.kernels.FAST_ULP_NOTE`). Measured
(adversarial suite, tests/test_native_fast.py): float32 probabilities at most
1.4 ulps above |q|, float64 3.3.

Online (:func:`online_rows`, the ``online`` variant): one read pass of block
maxima and compensated block sums merged by the online normaliser's operator
against the final maximum, then one output pass; within the bounds of the
compiled accurate softmax (:mod:`smx_cli.core.native`): float16 / bfloat16 /
float32 within 0.5 ulp + 2**-20 ulp, float64 within 1.5 ulps, for entries
whose exact value is a normal number.

Special rows follow the numpy kernels exactly: a NaN makes the row NaN; +inf
entries share the mass equally (log: log(1/n)); a row of all -inf is NaN, or
0 (log -inf) with ``masked="zeros"``.
"""
from __future__ import annotations

import os

import numpy as np

from smx_cli.core import native
from smx_cli.core.native import _blocks, _check_rows, _dt, _raw, _temperature  # noqa: F401

try:
    from smx_cli.core import _smx_fast as _ext
    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # not built: the numpy fast kernels run
    _ext = None
    _IMPORT_ERROR = str(exc)

_KINDS = {"prob": 0, "logprob": 1}


def available() -> bool:
    """True when the extension is built and importable (whatever SMX_ENGINE says)."""
    return _ext is not None


def why_unavailable() -> str | None:
    """The import error when the extension is missing, else None."""
    return _IMPORT_ERROR


def engine() -> str:
    """'numpy' (extension missing, SMX_ENGINE=numpy, or inside
    :func:`smx_cli.core.native.numpy_engine`), else 'native-<isa>'.

    Examples
    --------
    >>> with native.numpy_engine():
    ...     engine()
    'numpy'
    """
    if (_ext is None or getattr(native._forced, "numpy", False)
            or os.environ.get("SMX_ENGINE", "").strip().lower() == "numpy"):
        return "numpy"
    return "native-" + _ext.isa()


def supports(dtype) -> bool:
    """True when these kernels take rows of ``dtype`` and the native engine is selected."""
    return engine() != "numpy" and np.dtype(dtype) in native._DT


def set_isa(name: str) -> str:
    """Run the named CPU variant ('baseline', 'avx2', 'avx512'; test hook); returns the old one."""
    if _ext is None:
        raise RuntimeError(f"the smx fast extension is not built ({_IMPORT_ERROR})")
    return _ext.set_isa(name)


def _run(fn, n: int, c: int, threads: int | None) -> None:
    blocks, nt = _blocks(n, c, threads)
    if nt == 1:
        for r0, r1 in blocks:
            fn(r0, r1)
        return
    pool = native._pool(nt)
    for f in [pool.submit(fn, r0, r1) for r0, r1 in blocks]:
        f.result()


def _args(x2, out, masked, temperature):
    if _ext is None:
        raise RuntimeError(f"the smx fast extension is not built ({_IMPORT_ERROR})")
    x2 = _check_rows(x2)
    if masked not in ("nan", "zeros"):
        raise ValueError(f"masked must be 'nan' or 'zeros', got {masked!r}")
    t = _temperature(temperature)
    dt = _dt(x2)
    if not isinstance(out, np.ndarray) or out.shape != x2.shape or out.dtype != x2.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {x2.shape} and dtype {x2.dtype}")
    if np.shares_memory(out, x2):
        raise ValueError("out must not overlap x2")
    return x2, t, dt, 1 if masked == "zeros" else 0


def fast_rows(x2: np.ndarray, out: np.ndarray, *, kind: str = "prob", temperature: float = 1.0,
              masked: str = "nan", threads: int | None = None) -> np.ndarray:
    """Fast-mode softmax (``kind="prob"``) or log-softmax (``"logprob"``) of rows into ``out``.

    Parameters
    ----------
    x2 : ndarray (N, C), C-contiguous, float16 / bfloat16 / float32 / float64
    out : ndarray (N, C), C-contiguous, same dtype (may not overlap ``x2``)
    kind : {'prob', 'logprob'}
    temperature : float > 0
    masked : {'nan', 'zeros'}
        What a row of all -inf gives.
    threads : int or None
        Python threads over contiguous row blocks (default min(cpu_count, 2)).

    Returns
    -------
    ndarray
        ``out``.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    >>> if available():
    ...     fast_rows(x, np.empty_like(x)).astype(np.float64).round(4).tolist()
    ... else:
    ...     [[0.09, 0.2447, 0.6652]]
    [[0.09, 0.2447, 0.6652]]
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'prob' or 'logprob', got {kind!r}")
    x2, t, dt, mz = _args(x2, out, masked, temperature)
    n, c = x2.shape
    if n == 0 or c == 0:
        return out
    xr, orr = _raw(x2), _raw(out)
    k = _KINDS[kind]
    _run(lambda r0, r1: _ext.fast(xr, orr, dt, n, c, k, t, mz, r0, r1), n, c, threads)
    return out


def online_rows(x2: np.ndarray, out: np.ndarray, *, temperature: float = 1.0, masked: str = "nan",
                block: int = 1024, threads: int | None = None) -> np.ndarray:
    """The online normaliser's softmax of rows into ``out`` (blocks of ``block`` columns).

    Same arguments as :func:`fast_rows` (probabilities only), plus the block
    width of the one-pass normaliser. Accurate: see the module docstring.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> if available():
    ...     online_rows(x, np.empty_like(x), block=2).round(4).tolist()
    ... else:
    ...     [[0.09, 0.2447, 0.6652]]
    [[0.09, 0.2447, 0.6652]]
    """
    x2, t, dt, mz = _args(x2, out, masked, temperature)
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n, c = x2.shape
    if n == 0 or c == 0:
        return out
    xr, orr = _raw(x2), _raw(out)
    _run(lambda r0, r1: _ext.online(xr, orr, dt, n, c, block, t, mz, r0, r1), n, c, threads)
    return out


__all__ = ["available", "why_unavailable", "engine", "supports", "fast_rows", "online_rows",
           "set_isa"]
