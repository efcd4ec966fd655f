"""One block pipeline for ``smx softmax``: read -> compute -> diagnose, block by block.

The whole array is one block; a big NPY or CSV/TSV file is many. Either way
the same :class:`BlockPipeline` computes each block, counts its diagnostics,
keeps the first rows for display and hands the values to a sink (a streamed
output file) -- so diagnostics, display and ``--strict`` are decided once,
from one :class:`PipelineResult`, whatever the source.

No click, no rich: progress is reported through a callback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from smx_cli import io as io_mod
from smx_cli.analysis.diagnostics import Accumulator, SoftmaxDiagnostics
from smx_cli.core import registry
from smx_cli.core.emulate_torch import TORCH_DTYPES, torch_compute
from smx_cli.errors import SmxError
from smx_cli.io import NPY_MAGIC, ZIP_MAGIC, stream

#: the variants --emulate torch reproduces: torch.softmax and torch.log_softmax (log?)
TORCH_FUNCTIONS = {"stable": False, "log": True}
#: how an emulated run rounds: every operation (the paper's model) or as
#: PyTorch's CPU kernels do (16-bit storage, float32 arithmetic)
EMULATIONS = ("strict", "torch")
# input bytes per streamed NPY block: peak memory is a few times this
STREAM_BLOCK = 16 << 20
# CSV/TSV inputs at least this big are parsed and written in row blocks
TEXT_STREAM_BYTES = 16 << 20
TEXT_BLOCK = 8 << 20


@dataclass
class SoftmaxJob:
    """What to compute on every block (the parsed options of ``smx softmax``)."""

    variant: str = "stable"
    temperature: float = 1.0
    dtype: str | None = None
    emulate: str = "strict"
    masked: str = "nan"
    mask: np.ndarray | None = None
    options: registry.VariantOptions = field(default_factory=registry.VariantOptions)
    fast: bool = False
    threads: int | None = None
    # --emulate torch: float32 lanes of the kernels reproduced (None: this machine's)
    lanes: int | None = None

    def check(self) -> "SoftmaxJob":
        """Refuse combinations that have no meaning (a ``ValueError``)."""
        if self.emulate not in EMULATIONS:
            raise ValueError(f"emulate must be one of {', '.join(EMULATIONS)}")
        if self.emulate == "torch":
            if self.dtype not in TORCH_DTYPES:
                raise ValueError("--emulate torch reproduces PyTorch's CPU kernels for "
                                 f"--dtype {'/'.join(TORCH_DTYPES)}: give one of them")
            if self.variant not in TORCH_FUNCTIONS:
                raise ValueError("--emulate torch reproduces torch.softmax (--variant stable) "
                                 "and torch.log_softmax (--variant log)")
            if self.mask is not None or self.fast or self.masked != "nan":
                raise ValueError("--emulate torch takes no --mask, --masked or --fast")
        return self

    @property
    def sparse(self) -> bool:
        return registry.exact_zeros(self.variant, self.options)

    def run(self, x2: np.ndarray, mask: np.ndarray | None = None) -> registry.VariantRun:
        """Compute one block of (rows, C) logits."""
        try:
            if self.emulate == "torch":
                res = torch_compute(x2, self.dtype, log=TORCH_FUNCTIONS[self.variant],
                                    temperature=self.temperature, lanes=self.lanes)
                return registry.VariantRun(res, None, None, np.asarray(x2))
            return registry.run(x2, self.variant, temperature=self.temperature, dtype=self.dtype,
                                masked=self.masked, mask=mask, options=self.options,
                                fast=self.fast, threads=self.threads)
        except ValueError as exc:
            raise SmxError(str(exc)) from None


@dataclass
class PipelineResult:
    """Everything the display and ``--strict`` need, however many blocks there were.

    ``head_logits``/``head_values`` are the first ``keep`` rows; ``run`` is the
    whole-array :class:`~smx_cli.core.registry.VariantRun` when there was one
    block (gradients and in-memory outputs need it), else None.
    """

    diagnostics: SoftmaxDiagnostics
    head_logits: np.ndarray
    head_values: np.ndarray
    template: object  # the first block's SoftmaxResult: kind, fmt, variant
    support: np.ndarray | None
    rows: int
    blocks: int
    run: registry.VariantRun | None = None


class BlockPipeline:
    """Feed blocks of rows; get one :class:`PipelineResult`.

    Examples
    --------
    >>> pipe = BlockPipeline(SoftmaxJob(), keep=2)
    >>> for block in np.array_split(np.array([[0.0, 1.0]] * 5), 3):
    ...     _ = pipe.feed(block)
    >>> r = pipe.finish()
    >>> r.rows, r.blocks, r.head_values.shape
    (5, 3, (2, 2))
    """

    def __init__(self, job: SoftmaxJob, keep: int):
        self.job = job.check() if isinstance(job, SoftmaxJob) else job
        self.keep = keep
        self.acc: Accumulator | None = None
        self.template = None
        self.head_x: list[np.ndarray] = []
        self.head_y: list[np.ndarray] = []
        self.kept = 0
        self.support: list[np.ndarray] = []
        self.blocks = 0
        self.last_run: registry.VariantRun | None = None

    def feed(self, xb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Compute, count and keep one block; returns its values (for a sink)."""
        run = self.job.run(xb, mask)
        res = run.result
        if self.acc is None:
            self.acc = Accumulator(res.variant, res.fmt, res.kind, res.emulated,
                                   sparse=self.job.sparse, temperature=res.temperature,
                                   engine=res.engine)
            self.template = res
        self.acc.add(run.logits, res.values, res.stats)
        if self.kept < self.keep:
            take = min(self.keep - self.kept, len(res.values))
            self.head_x.append(np.array(run.logits[:take]))
            self.head_y.append(np.array(res.values[:take]))
            self.kept += take
        if run.support is not None:
            self.support.append(run.support)
        self.blocks += 1
        self.last_run = run
        return res.values

    def finish(self, classes: int | None = None) -> PipelineResult:
        if self.acc is None:  # no block at all (an empty streamed file)
            self.feed(np.zeros((0, classes or 0)))
        values = np.concatenate(self.head_y) if self.head_y else np.zeros((0, self.acc.classes))
        logits = np.concatenate(self.head_x) if self.head_x else values
        support = np.concatenate(self.support) if self.support else None
        diag = self.acc.result()
        return PipelineResult(diag, logits, values, self.template, support, diag.inputs.rows,
                              self.blocks, self.last_run if self.blocks == 1 else None)


def whole_array(x2: np.ndarray, job: SoftmaxJob, keep: int) -> PipelineResult:
    """The pipeline over an array in memory: one block.

    Examples
    --------
    >>> r = whole_array(np.array([[1000.0, 2000.0]]), SoftmaxJob(variant="naive"), keep=5)
    >>> r.diagnostics.exp_overflow, r.run.result.values.shape
    (2, (1, 2))
    """
    pipe = BlockPipeline(job, keep)
    pipe.feed(x2, job.mask)
    return pipe.finish()


def streamable(file: str | None, *, axis: int, key: str | None, out_fmt: str | None,
               job: SoftmaxJob, whole_array_needed: bool) -> str | None:
    """Whether a run can stream its input in row blocks (bounded memory): how.

    Row-local work only (no mask or gradients, no Gumbel draws, whose random
    stream is per call) along the last axis, from a file (not stdin):
    ``"npy"`` for an NPY file, ``"text"`` for a CSV/TSV file of at least
    16 MB, each with output to .npy, .csv, .tsv or none.
    Anything else returns None: one block.
    """
    if (file in (None, "-") or job.mask is not None or whole_array_needed
            or registry.get(job.variant).stochastic or key):
        return None
    try:
        if not os.path.isfile(file):
            return None
        with open(file, "rb") as fh:
            magic = fh.read(6)
        if magic == NPY_MAGIC:
            shape, dtype = stream.npy_info(file)
        elif magic.startswith(ZIP_MAGIC[:4]):
            return None
        else:
            big = os.path.getsize(file) >= TEXT_STREAM_BYTES
            ok = big and out_fmt in (None, "csv", "tsv", "npy") and axis in (-1, 1)
            return "text" if ok else None
    except (OSError, ValueError):
        return None  # the whole-array reader reports it properly
    if out_fmt not in (None, "npy", "csv", "tsv"):
        return None
    if dtype.hasobject or dtype.kind not in "fiu" or len(shape) < 1:
        return None
    return "npy" if axis in (-1, len(shape) - 1) else None


@dataclass
class Streamed:
    """A streamed run: its result, the input's shape and class names."""

    result: PipelineResult
    shape: tuple[int, ...]
    class_names: list[str] | None


def stream_file(file: str, how: str, job: SoftmaxJob, keep: int, *, output: str | None,
                out_fmt: str | None, delimiter=None, header=None, digits: int | None = None,
                progress: Callable[[int], Callable[[int, int], None]] | None = None) -> Streamed:
    """Run the pipeline over ``file`` block by block, writing ``output`` as it goes.

    ``progress(total_bytes)`` may return a context manager yielding
    ``advance(done, total)`` (the CLI's progress bar).
    """
    pipe = BlockPipeline(job, keep)
    if how == "text":
        names = _stream_text(file, pipe, output, out_fmt, delimiter, header, digits)
        res = pipe.finish()
        return Streamed(res, (res.rows, res.diagnostics.inputs.classes), names)
    shape, in_dtype = stream.npy_info(file)
    total = int(np.prod(shape, dtype=np.int64)) * in_dtype.itemsize
    bar = progress(total) if progress else _no_progress()
    with bar as advance:
        try:
            if output and out_fmt != "npy":
                # NPY -> CSV/TSV: the rows of the last axis, as the whole-array path writes them
                results = (pipe.feed(xb) for _, _, xb in stream.iter_npy_blocks(
                    file, block_bytes=STREAM_BLOCK))
                _write_blocks(output, out_fmt, results, None, digits, total * 2)
            elif output:
                stream.stream_npy(file, output, pipe.feed, progress=advance,
                                  block_bytes=STREAM_BLOCK)
            else:
                for s0, n, xb in stream.iter_npy_blocks(file, block_bytes=STREAM_BLOCK):
                    pipe.feed(xb)
                    advance(s0 + len(xb), n)
        except stream.StreamError as exc:
            raise SmxError(str(exc)) from None
        except OSError as exc:
            raise SmxError(f"{output or file}: {exc.strerror or exc}") from None
    return Streamed(pipe.finish(shape[-1] if shape else 1), tuple(shape), None)


class _no_progress:
    def __enter__(self):
        return lambda done, total: None

    def __exit__(self, *exc):
        return False


def _stream_text(file, pipe: BlockPipeline, output, out_fmt, delimiter, header, digits):
    """Feed a big CSV/TSV file to the pipeline in row blocks; write the output as it comes."""
    state = {"names": None}

    def results():
        for values, names in io_mod.iter_text_blocks(file, delimiter=delimiter, header=header,
                                                     block_bytes=TEXT_BLOCK):
            state["names"] = names
            yield pipe.feed(values)

    if not output:
        for _ in results():
            pass
        return state["names"]
    _write_blocks(output, out_fmt, results(), lambda: state["names"], digits,
                  os.path.getsize(file))
    return state["names"]


def _write_blocks(output, out_fmt, results, columns, digits, size_hint):
    try:
        stream.write_row_blocks(output, out_fmt, results, columns=columns, digits=digits,
                                size_hint=size_hint)
    except OSError as exc:
        raise SmxError(f"{output}: {exc.strerror or exc}; nothing was written") from None


def strict_failure(diag: SoftmaxDiagnostics) -> str | None:
    """The ``--strict`` complaint about a result, or None when it is clean.

    Examples
    --------
    >>> r = whole_array(np.array([[1000.0, 2000.0]]), SoftmaxJob(variant="naive"), keep=1)
    >>> strict_failure(r.diagnostics)
    '--strict: the result holds NaN in 1 row (row 0)'
    """
    if diag.output_nan:
        n = diag.output_nan_rows
        idx = diag.nan_output_row_index
        where = ", ".join(str(i) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
        return (f"--strict: the result holds NaN in {n:,} row{'' if n == 1 else 's'}"
                + (f" (row{'' if n == 1 else 's'} {where})" if idx else ""))
    if diag.exp_overflow or diag.sum_overflow_rows:
        return "--strict: exp overflowed to inf while computing"
    return None
