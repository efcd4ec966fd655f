"""``smx xent`` on N-d logits: language-model (B, T, V) files, --shift-labels, --pad-id, --vocab.

Kept apart from ``cli/xent.py``: that command calls :func:`wants_nd` and, when
it says yes, hands the run to :func:`run_nd`. N-d NPY and safetensors files
whose class axis is the last are read in row blocks (bounded memory); other
layouts are read whole (safetensors memory-mapped) and their class axis
moved last in blocks.
"""
from __future__ import annotations

import math
import os
import re

import click
import numpy as np

from smx_cli.analysis.sequences import (evaluate_tokens, pad_to_ignore, sequence_report,
                                        shift_labels)
from smx_cli.cli.emit import (Messages, Payload, progress_bar, show, stdout_console, write_file,
                              write_stdout)
from smx_cli.core.precision import result_format
from smx_cli.core.xent import NotProbabilities
from smx_cli.core.xent_kdim import relocate
from smx_cli.errors import SmxError
from smx_cli.io import NPY_MAGIC, ZIP_MAGIC, read_array, stream
from smx_cli.io import safetensors as st
from smx_cli.io.labels import read_labels
from smx_cli.io.vocab import read_vocab
from smx_cli.render import sequences as render_seq
from smx_cli.render import xent as render_xent

_STREAM_BLOCK = 16 << 20
# names a labels tensor goes by in a safetensors file that holds several
_ID_KEYS = ("labels", "input_ids", "ids", "targets")


def lm_options(fn):
    """The N-d / language-model options of ``smx xent``."""
    for dec in reversed([
        click.option("--class-axis", type=int, default=None, metavar="AXIS",
                     help="The class (vocabulary) axis of N-d logits [default: the last, "
                          "as language models lay out (batch, tokens, vocab); same as --axis]"),
        click.option("--shift-labels", is_flag=True,
                     help="Causal LM: score logits[:, :-1] against ids[:, 1:] (as Hugging Face "
                          "does); --labels holds the (batch, tokens) input ids"),
        click.option("--pad-id", type=int, default=None, metavar="ID",
                     help="Token id of padding: those positions count nowhere"),
        click.option("--vocab", "vocab_path", metavar="FILE",
                     help="Token strings: one token per line (line i is id i), or a "
                          "tokenizer.json (model.vocab); shown instead of ids"),
    ]):
        fn = dec(fn)
    return fn


def refuse_with_scheduler(class_axis, shift, pad_id, vocab_path) -> None:
    """The Dask engine (--scheduler) takes 2-D rows: the LM options are not silently dropped."""
    for value, flag in ((class_axis, "--class-axis"), (shift or None, "--shift-labels"),
                        (pad_id, "--pad-id"), (vocab_path, "--vocab")):
        if value is not None:
            raise click.UsageError(f"{flag} is not supported with --scheduler")


def _header_shape(file: str, key: str | None):
    """(kind, shape, info) from a file's header alone: safetensors, npy, or (None, None, None)."""
    if file == "-" or not os.path.isfile(file):
        return None, None, None
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None, None, None
    if head.startswith(NPY_MAGIC):
        try:
            shape, dtype = stream.npy_info(file)
        except (OSError, ValueError):
            return None, None, None  # the whole-array path reports it
        return "npy", tuple(shape), dtype.newbyteorder("=")
    if file.lower().endswith(st.SUFFIXES) or st.looks_like_safetensors(head[:9], size):
        tensors, _ = st.read_info(file)
        info = st.choose(tensors, key, file)
        return "safetensors", info.shape, info
    if head.startswith(ZIP_MAGIC):
        return "npz", None, None
    return None, None, None


def wants_nd(file, key, label_column, class_axis, shift, pad_id, vocab_path,
             picked: bool = False) -> bool:
    """Whether this run is for :func:`run_nd`: an LM option, or logits of 3 or more axes.

    ``picked``: --id-column, --columns or --drop-columns name columns of a 2-D file.
    """
    if shift or pad_id is not None or vocab_path or class_axis is not None:
        if label_column is not None or picked:
            raise click.UsageError("--class-axis, --shift-labels, --pad-id and --vocab take "
                                   "--labels FILE, not --label-column, --id-column, --columns "
                                   "or --drop-columns")
        return True
    if label_column is not None or picked:
        return False
    kind, shape, _ = _header_shape(file, key)
    if kind == "npz":
        return read_array(file, key=key).values.ndim >= 3
    return shape is not None and len(shape) >= 3


def _is_safetensors(path: str) -> bool:
    if path == "-" or not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(9)
    return path.lower().endswith(st.SUFFIXES) or st.looks_like_safetensors(
        head, os.path.getsize(path))


def _read_ids(path: str) -> np.ndarray:
    """Token ids or targets from --labels: safetensors (a labels/input_ids tensor), NPY, text."""
    if _is_safetensors(path):
        tensors, _ = st.read_info(path)
        names = [k for k in _ID_KEYS if k in tensors]
        key = names[0] if names and len(tensors) > 1 else None
        return np.asarray(st.load(path, key))
    return np.asarray(read_labels(path))


def _targets(ids, shape, ax, opts, shift, pad_id, labels_path):
    """Targets as (M,) indices or (M, C) probabilities for the logits' rows."""
    lead = tuple(d for i, d in enumerate(shape) if i != ax)
    ii = opts["ignore_index"]
    if ids.shape == tuple(shape) and ids.dtype.kind == "f" and not shift:
        return np.moveaxis(ids, ax, -1).reshape(-1, shape[ax])
    if ids.shape != lead:
        raise SmxError(f"{labels_path}: labels have shape {ids.shape}; the logits {tuple(shape)} "
                       f"need token ids of shape {lead} (the logits' shape without class "
                       f"axis {ax}), or probability targets of the logits' shape")
    try:
        if pad_id is not None:
            ids = pad_to_ignore(ids, pad_id, ii)
        if shift:
            ids = shift_labels(ids, ii)
    except ValueError as exc:
        raise SmxError(f"{labels_path}: {exc}") from None
    return ids.reshape(-1)


def _row_blocks(kind, file, info, x, c):
    """(start, (rows, C) block) pairs over the logits with the class axis last."""
    if kind == "safetensors":
        return ((s, b) for s, _, b in st.iter_blocks(file, info, block_bytes=_STREAM_BLOCK))
    if kind == "npy":
        return ((s, b) for s, _, b in stream.iter_npy_blocks(file, block_bytes=_STREAM_BLOCK))
    x2 = x.reshape(-1, c)
    step = max(1, _STREAM_BLOCK // max(1, c * x2.dtype.itemsize))
    return ((s, np.ascontiguousarray(x2[s:s + step])) for s in range(0, len(x2), step))


def run_nd(*, file, key, axis, class_axis, labels_path, weight, opts, worst, max_rows, output,
           fmt, strict, threads, shift, pad_id, vocab_path, want_grad, temperature=1.0,
           msgs=None, summary_only=False):
    """``smx xent`` on N-d logits (and every safetensors input)."""
    from smx_cli.cli import xent as cx  # the 2-D command's summary helpers

    if want_grad:
        raise click.UsageError("--grad, --grad-out and --check-grad take 2-D (N, C) logits; for "
                               "N-d logits use smx_cli.cross_entropy_grad(x, y, class_axis=-1)")
    if labels_path is None:
        raise click.UsageError("give --labels FILE with N-d logits")
    kind, shape, info = _header_shape(file, key)
    x = None
    if kind not in ("npy", "safetensors"):
        x = read_array(file, key=key).values
        shape = x.shape
    ax_arg = class_axis if class_axis is not None else axis
    nd = len(shape)
    if nd == 0 or not -nd <= ax_arg < nd:
        raise SmxError(f"{file}: class axis {ax_arg} is out of range for logits of shape "
                       f"{tuple(shape)}; give --class-axis between {-max(nd, 1)} and {nd - 1}")
    ax = ax_arg % nd
    c = int(shape[ax])
    if c == 0:
        raise SmxError(f"{file}: the logits have no classes (axis {ax} has length 0)")
    if ax != nd - 1 and x is None:
        x = read_array(file, key=key).values  # not streamable: whole (memory-mapped)
    if x is not None:
        x = np.moveaxis(x, ax, -1)
    vocab = read_vocab(vocab_path) if vocab_path else None
    ids = _read_ids(labels_path)
    targets = _targets(ids, shape, ax, opts, shift, pad_id, labels_path)
    from smx_cli.io.labels import read_weights
    weights = read_weights(weight, c) if weight else None
    lead = tuple(d for i, d in enumerate(shape) if i != ax)
    m = math.prod(lead)
    tally = cx._InputTally()  # noqa: SLF001 - the command's own helper
    dtype = {"npy": info, "safetensors": getattr(info, "dtype", None)}.get(kind) \
        if x is None else x.dtype
    itemsize = dtype.itemsize
    with progress_bar(m * c * itemsize, "smx xent") as advance:
        def on_block(start, xb):
            tally.add(xb)
            advance(start + len(xb), m)
        try:
            blocks = _row_blocks(kind if x is None else None, file, info, x, c)
            if temperature != 1.0:  # as the 2-D path: divided in float64
                blocks = ((s, np.asarray(b, np.float64) / temperature) for s, b in blocks)
            res, cover = evaluate_tokens(blocks, m, c, targets, weight=weights, threads=threads,
                                         on_block=on_block, **opts)
        except stream.StreamError as exc:
            raise SmxError(str(exc)) from None
        except SmxError:
            raise
        except NotProbabilities as exc:  # the logits file is at fault, not the labels
            raise SmxError(f"{file}: {exc}") from None
        except ValueError as exc:
            raise SmxError(f"{labels_path}: {_where(exc, lead, shift)}") from None
        except OSError as exc:
            raise SmxError(f"{file}: cannot read ({exc.strerror or exc})") from None
    seq = None
    if len(lead) == 2 and res.target_kind == "index":
        seq = sequence_report(res, lead, top_p_counts=cover, worst=worst or 10)
    meta, panel, on_screen = _emit(res, seq, cover, ids if shift else None, vocab, cx=cx, file=file, temperature=temperature,
          shape=tuple(shape), ax=ax, c=c, dtype=dtype, weights=weights, opts=opts, tally=tally,
          shift=shift, pad_id=pad_id, vocab_path=vocab_path, output=output, fmt=fmt,
          worst=worst, max_rows=max_rows, lead=lead, summary_only=summary_only)
    msgs = msgs or Messages()
    if strict:
        bad = int((~np.isfinite(res.loss) & ~res.ignored).sum())
        if bad or (opts["reduction"] != "none" and not math.isfinite(res.reduced)):
            msgs.wrote(output)  # the file is complete: say so first
            raise SmxError(f"--strict: {bad} sample loss(es) are NaN or inf" if bad
                           else f"--strict: {cx._undefined_reason(res)}")  # noqa: SLF001
    if not on_screen or output:
        msgs.summary(render_xent.summary_line(meta), None if on_screen else panel)
    msgs.wrote(output)


def _options(cx, opts, weights, shift, pad_id) -> str:
    text = cx._options_text(opts["reduction"], opts["label_smoothing"],  # noqa: SLF001
                            opts["ignore_index"], opts["input_kind"], weights)
    if shift:
        text += ", labels shifted (each sequence's last position is not scored)"
    if pad_id is not None:
        text += f", pad id {pad_id} not scored"
    return text


def _where(exc: ValueError, lead, shift: bool) -> str:
    """The error with the flat row index as a position; with --shift-labels, the ids' own."""
    msg = str(relocate(exc, lead))
    if shift and len(lead) == 2:
        msg = re.sub(r"^label at \((\d+), (\d+)\)",
                     lambda m: f"token id at ({m.group(1)}, {int(m.group(2)) + 1})", msg)
    return msg


def per_token_records(res, cover, lead, shift) -> dict[str, np.ndarray]:
    """One record per scored position (the shifted-out last token of each sequence
    dropped), as named columns: int64 indices and counts, bool flags, float64 losses.
    A predicted id of -1 marks a position whose prediction is undefined (NaN logits)."""
    m = len(res.loss)
    t = lead[-1] if lead else 1
    idx = np.arange(m, dtype=np.int64)
    keep = idx % t != t - 1 if shift else np.ones(m, dtype=bool)
    undefined = render_xent.undefined_prediction(res)
    cols = {"seq": idx // t, "pos": idx % t, "label": res.true_class,
            "predicted": np.where(undefined, -1, res.predicted), "p_true": res.p_true,
            "loss": res.loss, "nll": res.nll, "entropy": res.entropy, "top_p_tokens": cover,
            "correct": res.correct, "ignored": res.ignored}
    types = {"p_true": np.float64, "loss": np.float64, "nll": np.float64,
             "entropy": np.float64, "correct": bool, "ignored": bool}
    return {name: np.asarray(col, dtype=types.get(name, np.int64))[keep]
            for name, col in cols.items()}


def _meta(res, seq, cx, *, file, shape, ax, c, dtype, weights, opts, shift, pad_id, vocab,
          vocab_path):
    meta = cx._summary(res, file, c, None, opts["reduction"], opts["label_smoothing"],  # noqa: SLF001
                       opts["ignore_index"], opts["input_kind"], weights,
                       result_format(dtype).eps)
    meta.update({"shape": list(shape), "class_axis": ax, "shift_labels": shift,
                 "pad_id": pad_id, "vocab": vocab_path})
    if seq is not None:
        f = cx._finite_or_none  # noqa: SLF001
        meta["corpus"] = {
            "tokens": seq.corpus_tokens, "total_nll": f(seq.corpus_nll),
            "perplexity": f(seq.corpus_perplexity),
            "perplexity_is": "exp(total NLL / total tokens), not the mean of the sequences' "
                             "perplexities",
            "mean_sequence_perplexity": f(seq.mean_sequence_perplexity),
            "bits_per_token": f(seq.corpus_bits_per_token), "accuracy": f(seq.corpus_accuracy)}
        meta["sequences"] = [
            {"seq": i, "tokens": int(seq.tokens[i]), "mean_nll": f(seq.mean_nll[i]),
             "perplexity": f(seq.perplexity[i]), "bits_per_token": f(seq.bits_per_token[i]),
             "accuracy": f(seq.accuracy[i])} for i in range(len(seq.tokens))]
        meta["worst_tokens"] = [
            {"seq": w.sequence, "pos": w.position,
             "true": vocab[w.true_token] if vocab and w.true_token < len(vocab) else w.true_token,
             "predicted": (vocab[w.predicted_token] if vocab and w.predicted_token < len(vocab)
                           else w.predicted_token),
             "true_id": w.true_token, "predicted_id": w.predicted_token,
             "p_true": f(w.p_true), "nll": f(w.nll)} for w in seq.worst]
    return meta


def _emit(res, seq, cover, ids, vocab, *, cx, file, shape, ax, c, dtype, weights, opts, tally,
          shift, pad_id, vocab_path, output, fmt, worst, max_rows, lead, temperature=1.0,
          summary_only=False):
    """Write and show the N-d result; returns (meta, summary panel, whether it was shown)."""
    meta = _meta(res, seq, cx, file=file, shape=shape, ax=ax, c=c, dtype=dtype, weights=weights,
                 opts=opts, shift=shift, pad_id=pad_id, vocab=vocab, vocab_path=vocab_path)
    meta["temperature"] = temperature
    records = per_token_records(res, cover, lead, shift and len(lead) == 2)
    meta["columns"] = list(records)
    if vocab is not None and len(records["seq"]) <= 100_000:
        def word(i):
            return vocab[int(i)] if 0 <= i < len(vocab) else None

        meta["true_tokens"] = [word(i) for i in records["label"]]
        meta["predicted_tokens"] = [word(i) for i in records["predicted"]]
    payload = Payload(np.zeros((0, 0)), None, meta, records=records, records_name="per_token")
    if output:
        write_file(output, payload, fmt)
    if fmt and fmt != "table" and not output:
        write_stdout(payload, fmt)
    panel = render_xent.summary_panel(
        res, eps=result_format(dtype).eps, input_counts=tally.counts, source=file, n_classes=c,
        options=_options(cx, opts, weights, shift, pad_id),
        smoothed=opts["label_smoothing"] > 0)
    # -o FILE: the data went to FILE; stdout shows only what was asked for (--worst,
    # --summary), stderr the summary line and 'wrote FILE' (as the 2-D path)
    on_screen = bool(worst or summary_only) if output else fmt in (None, "table")
    if not on_screen:
        return meta, panel, False
    console = stdout_console()
    parts = []
    if summary_only:
        pass
    elif seq is not None:
        parts.append(render_seq.sequence_table(seq, max_rows=max_rows,
                                               title=f"sequences of {file}"))
        context = ids if ids is not None and ids.ndim == 2 else None
        parts.append(render_seq.worst_tokens_table(seq, vocab, context=context))
        parts.append(render_seq.corpus_panel(seq, source=file))
    else:
        n = len(res.loss)
        order = cx._worst(res, worst) if worst else np.arange(min(n, max_rows))  # noqa: SLF001
        parts.append(render_xent.sample_table(res, order, class_names=vocab,
                                              title=f"cross-entropy of {file} "
                                              f"(rows: positions of {lead})"))
    parts.append(panel)
    show(console, *parts)
    return meta, panel, True
