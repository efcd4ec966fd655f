"""The softmax family on dask arrays, with smx's own kernels per block.

Rows whole in a chunk (``chunks=(rows, -1)``): every variant runs per block
through :func:`smx_cli.core.registry.run`, so the values are those of the
single-machine path bit for bit (the kernels are row-local).

A class axis split across chunks (a Zarr store of 256k-wide rows chunked
along both axes) is never rechunked: ``stable``, ``online``, ``log`` and
``logsumexp`` use a two-stage reduction, the online-softmax identity
(Milakov & Gimelshein 2018). Stage 1, per chunk j of a row: its maximum
m_j and the sum s_j = sum exp((x - m_j)/T) (x - m_j with its rounding error
recovered by TwoSum, the sum error-free split into hi + lo). Merge:
M = max_j m_j and S = sum_j s_j exp((m_j - M)/T) in double-double. Stage 2,
per chunk: p = exp((x - M)/T) / S, log p = (x - M)/T - log S. All in float64
and rounded once to the result format; within 4 ulps of the exact value
(``tests/test_dask.py`` measures it against the long-double reference).
Other variants need whole rows and say so.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core import registry
from smx_cli.core.accurate import shifted as _shifted
from smx_cli.core.eft import split_sum as _split_row_sum
from smx_cli.core.eft import two_prod as _two_prod
from smx_cli.core.eft import two_sum as _two_sum
from smx_cli.core.precision import format_of, result_format
from smx_cli.core.result import check_masked, check_temperature
from smx_cli.errors import SmxError

# stable, log, online: the accurate variants, two-stage when the rows are split
SPLIT_VARIANTS = registry.ACCURATE_VARIANTS


def _kind(variant: str) -> str:
    return registry.get(variant).kind


def output_dtype(x_dtype, dtype: str | None = None) -> np.dtype:
    """The dtype of the values for logits of ``x_dtype`` (emulating ``dtype``)."""
    return (format_of(dtype) if dtype else result_format(x_dtype)).dtype


def rows_whole(x) -> bool:
    """Whether every chunk of (N, C) ``x`` holds whole rows."""
    return len(x.chunks[1]) <= 1


def _check(x, variant, temperature, masked, options):
    if x.ndim != 2:
        raise SmxError(f"the Dask engine takes (N, C) logits, got shape {x.shape}")
    if variant not in registry.ALL_VARIANTS:
        raise SmxError(f"unknown variant {variant!r}; choose one of "
                       f"{', '.join(registry.ALL_VARIANTS)}")
    check_temperature(temperature)
    check_masked(masked)
    if options is not None and options.samples != 1:
        raise SmxError("the Dask engine draws one Gumbel sample per row (--samples 1)")


def _variant_block(xb, variant, temperature, dtype, masked, fast, options, out_dtype,
                   block_info=None):
    """One block of rows through the registry; (0, 0) probes give empty results."""
    if xb.size == 0:
        return np.empty(xb.shape, dtype=out_dtype)
    start = block_info[0]["array-location"][0][0] if block_info else 0
    return run_block(xb, variant, temperature, dtype, masked, fast, options,
                     (start,)).result.values


def run_block(xb, variant, temperature, dtype, masked, fast, options, seed_key):
    """One block through the registry on one thread; a seeded stochastic variant
    draws from its own reproducible stream, keyed by ``seed_key`` (not the
    single-machine draw). Library errors become SmxError.

    Every caller keys the stream by the block's first row, ``(start,)``, so the
    values written and the report computed in another pass draw the same noise."""
    if registry.get(variant).stochastic and options is not None and options.seed is not None:
        seq = np.random.SeedSequence([options.seed, *seed_key])
        options = registry.VariantOptions(options.alpha, options.tau, options.hard, 1,
                                          int(seq.generate_state(1)[0]))
    try:
        return registry.run(xb, variant, temperature=temperature, dtype=dtype, masked=masked,
                            options=options, fast=fast, threads=1)
    except ValueError as exc:
        raise SmxError(str(exc)) from None


def compute(x, variant: str = "stable", temperature: float = 1.0, dtype: str | None = None,
            masked: str = "nan", *, fast: bool = False, options=None):
    """Any variant of the softmax family over the rows of a dask array (lazy).

    Parameters are those of :func:`smx_cli.core.registry.run`; ``x`` is an
    (N, C) dask array. Returns an (N, C) dask array in the result format.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), chunks=(1, -1))
    >>> compute(x).compute(scheduler="synchronous").round(4).tolist()
    [[0.09, 0.2447, 0.6652], [0.3333, 0.3333, 0.3333]]
    """
    _check(x, variant, temperature, masked, options)
    out_dtype = output_dtype(x.dtype, dtype)
    if rows_whole(x):
        return x.map_blocks(_variant_block, variant, temperature, dtype, masked, fast, options,
                            out_dtype, dtype=out_dtype, meta=np.empty((0, 0), out_dtype))
    if variant not in SPLIT_VARIANTS or dtype or fast:
        raise SmxError(f"the class axis is split across {len(x.chunks[1])} chunks: only "
                       f"{', '.join(SPLIT_VARIANTS)} (accurate, no --dtype, no --fast) reduce "
                       "across chunks; for the others rechunk to whole rows: x.rechunk({1: -1})")
    m, s_hi, s_lo, special = _row_stats(x, temperature)
    import dask.array as da

    return da.blockwise(_finish_chunk, "ij", x, "ij", m, "i", s_hi, "i", s_lo, "i", special, "i",
                        dtype=out_dtype, meta=np.empty((0, 0), out_dtype),
                        temperature=temperature, kind=_kind(variant), masked=masked,
                        out_dtype=out_dtype)


def softmax(x, temperature: float = 1.0, masked: str = "nan"):
    """Accurate softmax of the rows of a dask array (within 4 ulps; lazy).

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[1000.0, 2000.0, 3000.0]]), chunks=(1, 2))  # split rows
    >>> softmax(x).compute(scheduler="synchronous").tolist()
    [[0.0, 0.0, 1.0]]
    """
    return compute(x, "stable", temperature, masked=masked)


def log_softmax(x, temperature: float = 1.0, masked: str = "nan"):
    """Accurate log-softmax of the rows of a dask array (lazy).

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[0.0, -40.0]]), chunks=(1, 1))
    >>> float(log_softmax(x)[0, 0].compute(scheduler="synchronous"))
    -4.248354255291589e-18
    """
    return compute(x, "log", temperature, masked=masked)


def logsumexp(x, temperature: float = 1.0):
    """log(sum(exp(x / T))) of each row of a dask array: (N,), float64 (lazy).

    The result format is that of :func:`smx_cli.core.softmax.logsumexp`.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[1000.0, 1000.0]]), chunks=(1, 1))
    >>> logsumexp(x).compute(scheduler="synchronous").tolist()
    [1000.6931471805599]
    """
    t = check_temperature(temperature)
    if x.ndim != 2:
        raise SmxError(f"the Dask engine takes (N, C) logits, got shape {x.shape}")
    out_dtype = result_format(x.dtype).dtype
    m, s_hi, s_lo, special = _row_stats(x, t)
    import dask.array as da

    return da.map_blocks(_lse_rows, m, s_hi, s_lo, special, t, out_dtype, dtype=out_dtype,
                         meta=np.empty((0,), out_dtype))


# ----------------------------------------------------------------------------
# the two-stage reduction

# per-chunk statistics columns
_M, _HI, _LO, _POSINF, _NAN = range(5)


def _chunk_stats(xb, t):
    """(rows, 5): finite-or-inf max (NaN ignored), split sum of exp((x - m)/T), +inf count, NaN."""
    x = np.asarray(xb, dtype=np.float64)
    out = np.zeros((x.shape[0], 5))
    if x.shape[0] == 0 or x.shape[1] == 0:
        out[:, _M] = -np.inf
        return out
    with np.errstate(all="ignore"):
        isnan = np.isnan(x)
        m = np.where(isnan, -np.inf, x).max(axis=1, keepdims=True)
        shift = np.where(np.isfinite(m), m, 0.0)
        q, c = _shifted(np.where(isnan, -np.inf, x), shift, t, True)
        e = np.exp(q)
        hi, lo = _split_row_sum(e, e * c)
    out[:, _M] = m[:, 0]
    out[:, _HI] = np.where(np.isfinite(m[:, 0]), hi[:, 0], 0.0)
    out[:, _LO] = np.where(np.isfinite(m[:, 0]), lo[:, 0], 0.0)
    out[:, _POSINF] = np.count_nonzero(x == np.inf, axis=1)
    out[:, _NAN] = isnan.any(axis=1)
    return out


def _merge_stats(st, t):
    """(rows, 5 * chunks) -> (rows, 4): M, S hi, S lo, special (0 ok, 1 NaN, 2 +inf, 3 masked)."""
    k = st.shape[1] // 5
    parts = st.reshape(st.shape[0], k, 5)
    m = parts[:, :, _M]
    big = m.max(axis=1) if k else np.full(st.shape[0], -np.inf)
    nan = parts[:, :, _NAN].any(axis=1)
    shift = np.where(np.isfinite(big), big, 0.0)
    s_hi = np.zeros(st.shape[0])
    s_lo = np.zeros(st.shape[0])
    with np.errstate(all="ignore"):
        for j in range(k):
            live = np.isfinite(m[:, j]) & np.isfinite(big)
            q, c = _shifted(np.where(live, m[:, j], shift), shift, t, True)
            f = np.exp(q)                         # exp((m_j - M)/T) = f (1 + c)
            p, perr = _two_prod(parts[:, j, _HI], f)
            lo = perr + parts[:, j, _LO] * f + parts[:, j, _HI] * f * c
            p = np.where(live, p, 0.0)
            lo = np.where(live, lo, 0.0)
            s_hi, err = _two_sum(s_hi, p)
            s_lo += err + lo
        s_hi, s_lo = _two_sum(s_hi, s_lo)
    special = np.where(nan, 1, np.where(big == np.inf, 2, np.where(big == -np.inf, 3, 0)))
    # a +inf row's entries share the mass: S holds how many +inf entries it has
    s_hi = np.where(special == 2, parts[:, :, _POSINF].sum(axis=1), s_hi)
    return np.stack([big, s_hi, s_lo, special.astype(np.float64)], axis=1)


def _row_stats(x, t):
    """Per-row M, S hi, S lo and the special-row code, as (N,) dask arrays."""
    nj = len(x.chunks[1])
    st = x.map_blocks(_chunk_stats, t, chunks=(x.chunks[0], (5,) * nj), dtype=np.float64,
                      meta=np.empty((0, 0)))
    merged = st.rechunk({1: -1}).map_blocks(_merge_stats, t, chunks=(x.chunks[0], (4,)),
                                            dtype=np.float64, meta=np.empty((0, 0)))
    return tuple(merged[:, i] for i in range(4))


def _log_sum(s_hi, s_lo):
    """log(S) for S = s_hi + s_lo >= 1: log1p of the exact S - 1 near 1."""
    with np.errstate(all="ignore"):
        return np.where(s_hi <= 2.0, np.log1p((s_hi - 1.0) + s_lo), np.log(s_hi) + s_lo / s_hi)


def _finish_chunk(xb, m, s_hi, s_lo, special, temperature, kind, masked, out_dtype):
    """Stage 2: the values of one chunk from its rows' M and S."""
    x = np.asarray(xb, dtype=np.float64)
    if x.size == 0:
        return np.empty(x.shape, dtype=out_dtype)
    fmt = result_format(out_dtype)
    with np.errstate(all="ignore"):
        shift = np.where(np.isfinite(m), m, 0.0)[:, None]
        q, c = _shifted(x, shift, temperature, True)
        if kind == "prob":
            e = np.exp(q)
            out = (e + e * (c - (s_lo / s_hi)[:, None])) / s_hi[:, None]
        else:
            out = (q - _log_sum(s_hi, s_lo)[:, None]) + c
        for i in np.flatnonzero(special):
            code = special[i]
            if code == 1:
                out[i] = np.nan
            elif code == 2:
                top = x[i] == np.inf
                p = top / s_hi[i]  # S: the row's +inf entries, across chunks
                out[i] = np.log(p) if kind == "logprob" else p
            elif masked == "nan":
                out[i] = np.nan
            else:
                out[i] = -np.inf if kind == "logprob" else 0.0
    return fmt.cast(out)


def _lse_rows(m, s_hi, s_lo, special, t, out_dtype):
    if m.size == 0:
        return np.empty(m.shape, dtype=out_dtype)
    with np.errstate(all="ignore"):
        out = np.where(special == 0, m / t + _log_sum(s_hi, s_lo), m)
        out = np.where(special == 1, np.nan, out)
    return result_format(out_dtype).cast(out)
