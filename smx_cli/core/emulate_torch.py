"""PyTorch's CPU softmax and log-softmax, reproduced bit for bit in numpy.

``--dtype float16`` (:mod:`smx_cli.core.softmax`) rounds *every* operation to
the format, the model of Blanchard, Higham & Higham (2021). Frameworks do not
run that way: PyTorch's CPU kernels for float16 and bfloat16 tensors keep the
data in 16 bits but compute in float32. This module follows the kernels of
``aten/src/ATen/native/cpu/SoftMaxKernel.cpp`` (``torch.softmax(x, dim=-1)``
on a contiguous CPU tensor) operation by operation:

softmax (float16, bfloat16)
    the row is widened to float32; ``m = max``; ``e = exp(x - m)`` in float32
    (SLEEF's vectorised ``expf`` on whole SIMD vectors, the C library's
    ``expf`` on the last ``C mod L`` entries); the sum of ``e`` in ``L``
    float32 lanes, the lanes folded pairwise, then the tail added one by one;
    ``r = 1 / sum`` in float32; each output ``e * r`` rounded once to 16 bits.
log-softmax (float16, bfloat16)
    ``m = max``; ``s = sum exp(x - m)`` in float32 (two ``L``-lane
    accumulators over ``2L``-entry chunks, SLEEF ``expf`` everywhere);
    ``s`` is *stored in the 16-bit format* (the kernel's scratch array has
    the tensor's type), then ``log(s)`` is rounded to 16 bits too; each output
    is ``(x - m) - log(s)`` in float32, rounded once.
float32
    softmax: ``exp(x - m)`` (SLEEF on every entry), the sum in ``L`` lanes
    with the tail merged lane-wise, ``e * (1 / sum)``; log-softmax as above
    without the 16-bit roundings.

``L`` is the SIMD width of the kernels torch dispatched to: 16 float32 lanes
for ``AVX512``, 8 for ``AVX2`` and for torch's 256-bit ``DEFAULT`` kernels.
:func:`machine_lanes` finds the width torch uses on *this* machine: torch's
own ``torch.backends.cpu.get_cpu_capability()`` when torch is importable,
else the ``ATEN_CPU_CAPABILITY`` override torch would honour, else the CPU's
flags as torch reads them (AVX-512 F/BW/VL/DQ: 16 lanes; otherwise 8), else
:data:`DEFAULT_LANES`. ``smx ... --torch-cpu avx512|avx2`` chooses instead
(to reproduce a run on another machine). SLEEF's ``expf_u10`` is
reproduced from its published algorithm (Cody-Waite reduction by ln 2, a
degree-6 polynomial, fused multiply-adds emulated exactly in float64 with
round-to-odd). Against torch 2.13 on an AVX-512 machine every entry of
softmax and log-softmax agrees bitwise on the tests' inputs
(``tests/test_emulate_torch.py``).
"""
from __future__ import annotations

import numpy as np

from smx_cli.core.precision import format_of
from smx_cli.core.softmax import KernelStats, SoftmaxResult, check_temperature

#: formats whose PyTorch CPU kernels this module reproduces
TORCH_DTYPES = ("float16", "bfloat16", "float32")
#: float32 lanes of one SIMD vector when nothing tells this machine's (AVX-512: 16)
DEFAULT_LANES = 16
#: the kernels ``--torch-cpu`` names, and their float32 lanes
TORCH_CPUS = {"avx512": 16, "avx2": 8}


def lanes_of_capability(capability: str) -> int:
    """float32 lanes of the kernels torch runs for a CPU capability name.

    Examples
    --------
    >>> lanes_of_capability("AVX512"), lanes_of_capability("AVX2"), lanes_of_capability("DEFAULT")
    (16, 8, 8)
    """
    return 16 if capability.strip().upper().startswith("AVX512") else 8


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux); None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


_MACHINE = None


def machine_lanes() -> tuple[int, str]:
    """(float32 lanes, how they were found) of torch's CPU kernels on this machine.

    The first of: ``torch.backends.cpu.get_cpu_capability()`` (torch
    importable; imported only here, once), the ``ATEN_CPU_CAPABILITY``
    environment variable, the CPU flags torch checks for its AVX-512 kernels
    (avx512f, avx512bw, avx512vl, avx512dq), :data:`DEFAULT_LANES`.
    """
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = _find_machine_lanes()
    return _MACHINE


def _find_machine_lanes() -> tuple[int, str]:
    import importlib.util
    import os

    try:
        if importlib.util.find_spec("torch") is not None:
            import torch

            cap = torch.backends.cpu.get_cpu_capability()
            return lanes_of_capability(cap), f"torch.backends.cpu.get_cpu_capability() = {cap}"
    except Exception:  # a broken torch install: fall through to what torch would do
        pass
    env = os.environ.get("ATEN_CPU_CAPABILITY", "").strip()
    if env:
        return lanes_of_capability(env), f"ATEN_CPU_CAPABILITY={env}"
    flags = _cpu_flags()
    if flags is not None and ("avx2" in flags or "avx512f" in flags):
        wide = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
        return (16, "CPU flags: AVX-512") if wide else (8, "CPU flags: AVX2")
    return DEFAULT_LANES, f"default ({DEFAULT_LANES} lanes: torch and the CPU flags unknown)"


def resolve_lanes(lanes: int | None) -> int:
    """``lanes``, or this machine's (:func:`machine_lanes`) when None."""
    if lanes is None:
        return machine_lanes()[0]
    if lanes not in (8, 16):
        raise ValueError(f"lanes must be 8 (AVX2) or 16 (AVX-512), got {lanes!r}")
    return lanes

_F = np.float32
_R_LN2 = _F(1.442695040888963407359924681001892137426645954152985934135449406931)
_L2U = _F(0.693145751953125)
_L2L = _F(1.428606765330187045e-06)
_POLY = [_F(0.000198527617612853646278381), _F(0.00139304355252534151077271),
         _F(0.00833336077630519866943359), _F(0.0416664853692054748535156),
         _F(0.166666671633720397949219), _F(0.5)]


def fma32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``a*b + c`` with one rounding.

    ``a*b`` is exact in float64 (48 bits); the sum is rounded to float64 to
    odd (its error found by TwoSum), which makes the final rounding to float32
    correct.

    Examples
    --------
    >>> a = np.float32(1 + 2**-12)
    >>> float(fma32(a, a, np.float32(-1))) == 2**-11 + 2**-24
    True
    """
    a64 = np.asarray(a, dtype=np.float64)
    p = a64 * np.asarray(b, dtype=np.float64)
    c64 = np.asarray(c, dtype=np.float64)
    s = p + c64
    bp = s - c64
    err = (p - bp) + (c64 - (s - bp))
    even = (s.view(np.int64) & 1) == 0
    fix = (err != 0) & even & np.isfinite(s)
    if np.any(fix):
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(_F)


def sleef_expf(d: np.ndarray) -> np.ndarray:
    """SLEEF's ``expf_u10`` (the vectorised exp PyTorch's CPU kernels call).

    Examples
    --------
    >>> sleef_expf(np.array([0.0, 1.0, -200.0], dtype=np.float32)).tolist()
    [1.0, 2.7182817459106445, 0.0]
    """
    d = np.asarray(d, dtype=_F)
    with np.errstate(all="ignore"):
        q = np.rint(d * _R_LN2)
        q = np.where(np.isfinite(q), q, 0).astype(_F)
        s = fma32(q, -_L2U, d)
        s = fma32(q, -_L2L, s)
        u = np.full(d.shape, _POLY[0], dtype=_F)
        for coef in _POLY[1:]:
            u = fma32(u, s, coef)
        u = _F(1) + fma32(s * s, u, s)
        qi = q.astype(np.int64)
        half = qi >> 1
        u = (u * np.ldexp(_F(1), half).astype(_F)) * np.ldexp(_F(1), qi - half).astype(_F)
        u = np.where(d < -104, _F(0), u)
        u = np.where(d > 100, _F(np.inf), u)
        u = np.where(np.isnan(d), d, u)
    return u.astype(_F)


def _libm_expf(d: np.ndarray) -> np.ndarray:
    """The C library's expf (correctly rounded for these arguments)."""
    with np.errstate(all="ignore"):
        return np.exp(d.astype(np.float64)).astype(_F)


def _fold(acc: np.ndarray) -> np.ndarray:
    """Fold (N, L) lanes pairwise (upper half onto lower) to (N,)."""
    while acc.shape[1] > 1:
        h = acc.shape[1] // 2
        acc = acc[:, :h] + acc[:, h:]
    return acc[:, 0]


def _sum_reduced_softmax(e: np.ndarray, lanes: int) -> np.ndarray:
    """The 16-bit softmax kernel's sum: L lanes, folded, then the tail one by one."""
    n, c = e.shape
    full = c - c % lanes
    acc = np.zeros((n, lanes), dtype=_F)
    for j in range(0, full, lanes):
        acc += e[:, j:j + lanes]
    s = _fold(acc)
    for j in range(full, c):
        s = s + e[:, j]
    return s


def _sum_reduce_all(e: np.ndarray, lanes: int) -> np.ndarray:
    """``vec::reduce_all``: first vector, lane-wise adds, the partial tail merged
    into the low lanes, then a pairwise fold (a short row: left to right)."""
    n, c = e.shape
    if c < lanes:
        s = e[:, 0].copy() if c else np.zeros(n, dtype=_F)
        for j in range(1, c):
            s = s + e[:, j]
        return s
    acc = e[:, :lanes].copy()
    full = c - c % lanes
    for j in range(lanes, full, lanes):
        acc += e[:, j:j + lanes]
    tail = c - full
    if tail:
        acc[:, :tail] += e[:, full:]
    return _fold(acc)


def _sum_two_accumulators(e: np.ndarray, lanes: int) -> np.ndarray:
    """``vec::map_reduce_all`` over a 16-bit row: chunks of 2L entries feed two
    L-lane accumulators; a partial last chunk merges lane-wise; then the two
    are added and folded. A row shorter than 2L is one partial chunk."""
    n, c = e.shape
    two = 2 * lanes
    if c < two:
        if c > lanes:
            lo = e[:, :lanes].copy()
            lo[:, :c - lanes] += e[:, lanes:]
            return _fold(lo)
        s = e[:, 0].copy() if c else np.zeros(n, dtype=_F)
        for j in range(1, c):
            s = s + e[:, j]
        return s
    acc0 = e[:, :lanes].copy()
    acc1 = e[:, lanes:two].copy()
    full = c - c % two
    for j in range(two, full, two):
        acc0 += e[:, j:j + lanes]
        acc1 += e[:, j + lanes:j + two]
    rest = c - full
    if rest > lanes:
        acc0 += e[:, full:full + lanes]
        acc1[:, :rest - lanes] += e[:, full + lanes:]
    elif rest:
        acc0[:, :rest] += e[:, full:]
    return _fold(acc0 + acc1)


def torch_softmax_rows(x2: np.ndarray, dtype: str, *, log: bool = False,
                       lanes: int | None = None) -> np.ndarray:
    """PyTorch's CPU ``softmax``/``log_softmax`` over the last axis of (N, C) rows.

    Parameters
    ----------
    x2 : ndarray, shape (N, C)
        Logits; rounded to ``dtype`` first as ``torch.from_numpy(x).to(dtype)`` does
        (float64 through float32).
    dtype : {'float16', 'bfloat16', 'float32'}
        The tensor's type: storage and output format.
    log : bool
        log_softmax instead of softmax.
    lanes : int or None
        float32 lanes per SIMD vector of the machine being reproduced
        (16 on AVX-512, 8 on AVX2); None: this machine's
        (:func:`machine_lanes`).

    Returns
    -------
    ndarray of ``dtype``, shape (N, C)

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0], [0.0, 12.0, -3.0]])
    >>> torch_softmax_rows(x, "float16", lanes=16).astype(float).round(5).tolist()
    [[0.09003, 0.24475, 0.66504], [1e-05, 1.0, 0.0]]
    """
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"PyTorch emulation covers {', '.join(TORCH_DTYPES)}, not {dtype!r}")
    lanes = resolve_lanes(lanes)
    fmt = format_of(dtype)
    x2 = np.asarray(x2)
    if x2.ndim != 2:
        raise ValueError(f"torch_softmax_rows takes (N, C) rows, got shape {x2.shape}")
    # the tensor in its own type; torch converts float64 to 16 bits through
    # float32 (tensor.to(torch.float16)), and so does this
    xs = fmt.cast(x2.astype(_F)) if x2.dtype == np.float64 else fmt.cast(x2)
    x = np.asarray(xs, dtype=_F)
    n, c = x.shape
    out = np.empty((n, c), dtype=fmt.dtype)
    if n == 0 or c == 0:
        return out
    reduced = dtype != "float32"
    with np.errstate(all="ignore"):
        m = x.max(axis=1, keepdims=True)
        d = x - m
        if log:
            e = sleef_expf(d)
            if reduced:
                s = _sum_two_accumulators(e, lanes)
                s = s.astype(fmt.dtype).astype(_F)  # the kernel's 16-bit scratch array
                ls = np.log(s.astype(np.float64)).astype(_F).astype(fmt.dtype).astype(_F)
            else:
                s = _sum_reduce_all(e, lanes)
                ls = np.log(s.astype(np.float64)).astype(_F)
            out[...] = (d - ls[:, None]).astype(fmt.dtype)
            return out
        if reduced:
            full = c - c % lanes
            e = np.empty_like(d)
            e[:, :full] = sleef_expf(d[:, :full])
            e[:, full:] = _libm_expf(d[:, full:])
            s = _sum_reduced_softmax(e, lanes)
        else:
            e = sleef_expf(d)
            s = _sum_reduce_all(e, lanes)
        r = (_F(1) / s)[:, None]
        out[...] = (e * r).astype(fmt.dtype)
    return out


def torch_compute(x2: np.ndarray, dtype: str, *, log: bool = False, temperature: float = 1.0,
                  lanes: int | None = None) -> SoftmaxResult:
    """:func:`torch_softmax_rows` as a :class:`~smx_cli.core.softmax.SoftmaxResult`.

    A temperature divides the rounded logits first, in the tensor's type
    (``torch.softmax(x / T)``). The kernel's exp overflow and underflow are
    counted like the other emulations'.

    Examples
    --------
    >>> r = torch_compute(np.array([[0.0, 20.0]]), "float16", lanes=16)
    >>> r.values.tolist(), r.stats.exp_underflow
    ([[0.0, 1.0]], 0)
    """
    t = check_temperature(temperature)
    fmt = format_of(dtype) if dtype in TORCH_DTYPES else None
    if fmt is None:
        raise ValueError(f"PyTorch emulation covers {', '.join(TORCH_DTYPES)}, not {dtype!r}")
    x = fmt.cast(np.asarray(x2))
    if t != 1.0:
        with np.errstate(all="ignore"):
            x = fmt.cast(np.asarray(x, dtype=_F) / _F(t)) if dtype != "float32" \
                else (x / _F(t)).astype(_F)
    values = torch_softmax_rows(x, dtype, log=log, lanes=lanes)
    stats = KernelStats()
    xf = np.asarray(x, dtype=_F)
    if xf.size:
        with np.errstate(all="ignore"):
            d = xf - xf.max(axis=1, keepdims=True)
            e = sleef_expf(d)
        finite = np.isfinite(d)
        stats.exp_underflow = int(np.count_nonzero((e == 0) & finite))
        stats.exp_overflow = int(np.count_nonzero(np.isinf(e) & finite))
    kind = "logprob" if log else "prob"
    name = "torch.log_softmax" if log else "torch.softmax"
    return SoftmaxResult(values, kind, fmt, True, name, t, stats)
