"""Rich renderables for the language-model report of ``smx xent``: sequences, corpus, worst tokens."""
from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from smx_cli.analysis.sequences import SequenceReport
from smx_cli.io.vocab import token_text
from smx_cli.render.tables import fmt_value


def _num(v: float, digits: int = 5) -> str:
    return fmt_value(float(v), digits)


def _fitted_table(title, headers, rows, justify="right") -> Table:
    """A table whose columns are never narrower than their widest cell: numbers are not cut.

    Headers may wrap (they are words); the cells keep their full width.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for j, name in enumerate(headers):
        width = max([len(r[j]) for r in rows] + [1])
        table.add_column(name, justify=justify if j else "right", min_width=width,
                         overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table


def sequence_table(rep: SequenceReport, *, max_rows: int = 20, title: str | None = None):
    """One row per sequence: tokens, mean NLL, perplexity, bits/token, accuracy, entropy."""
    pct = f"top-{rep.top_p * 100:g}%"
    headers = ["seq", "tokens", "NLL/tok", "perplexity", "bits/tok", "accuracy", "entropy", pct]
    b = len(rep.tokens)
    ent = rep.entropy
    rows = []
    for i in range(min(b, max_rows)):
        counted = ~np.isnan(ent[i])
        cover = ""
        if rep.top_p_count is not None and counted.any():
            cover = _num(float(np.median(rep.top_p_count[i][counted])), 4)
        rows.append([str(i), f"{int(rep.tokens[i]):,}", _num(rep.mean_nll[i]),
                     _num(rep.perplexity[i]), _num(rep.bits_per_token[i]),
                     _num(rep.accuracy[i], 4),
                     _num(ent[i][counted].mean(), 4) if counted.any() else "nan", cover])
    table = _fitted_table(title, headers, rows)
    legend = (f"NLL/tok: mean -log p(true) in nats; entropy: mean over the positions, nats; "
              f"{pct}: median number of tokens holding {rep.top_p * 100:g} % of the mass")
    if b > max_rows:
        legend = f"{b - max_rows:,} more sequences not shown (--rows N). " + legend
    return Group(table, Text(legend, style="dim"))


def corpus_panel(rep: SequenceReport, *, source: str | None = None) -> Panel:
    """Corpus perplexity (token-weighted) and what it is not."""
    lines = [
        Text.assemble(("corpus perplexity  ", "bold"), (_num(rep.corpus_perplexity, 6), "bold cyan"),
                      f"   = exp(total NLL / total tokens) = exp({_num(rep.corpus_nll, 8)} / "
                      f"{rep.corpus_tokens:,})"),
        Text(f"mean NLL           {_num(rep.corpus_mean_nll, 6)} nats/token, "
             f"{_num(rep.corpus_bits_per_token, 6)} bits/token"),
        Text(f"accuracy           {_num(rep.corpus_accuracy, 4)} (argmax = next token)"),
    ]
    if len(rep.tokens) > 1 and not math.isnan(rep.mean_sequence_perplexity):
        lines.append(Text(
            f"not the mean of the {len(rep.tokens)} sequences' perplexities "
            f"({_num(rep.mean_sequence_perplexity, 6)}): that mean weighs every sequence "
            "alike, whatever its length, and exp of a mean is at most the mean of exps",
            style="dim"))
    if rep.top_p_count is not None:
        counted = ~np.isnan(rep.entropy)
        if counted.any():
            c = rep.top_p_count[counted]
            lines.append(Text(
                f"per position       entropy median {_num(np.median(rep.entropy[counted]), 4)} "
                f"nats; {rep.top_p:g} of the mass in a median {_num(np.median(c), 4)} tokens "
                f"(max {int(c.max()):,})"))
    return Panel(Group(*lines), title=f"language model{': ' + source if source else ''}",
                 title_align="left", expand=False)


def worst_tokens_table(rep: SequenceReport, vocab: list[str] | None = None, *,
                       context: np.ndarray | None = None, title: str | None = None) -> Table:
    """The highest-NLL tokens: where, what the model had read, the true and predicted token, p(true)."""
    headers = ["seq", "pos"] + (["context"] if context is not None else []) + [
        "true", "predicted", "p(true)", "NLL"]
    rows = []
    for w in rep.worst:
        cells = [str(w.sequence), str(w.position)]
        if context is not None:
            cells.append(context_text(context[w.sequence], w.position, vocab))
        cells += [token_text(w.true_token, vocab), token_text(w.predicted_token, vocab),
                  _num(w.p_true, 4), _num(w.nll, 5)]
        rows.append(cells)
    table = _fitted_table(title or f"worst {len(rep.worst)} tokens (highest -log p(true))",
                          headers, rows)
    for j in range(2 + (context is not None), 4 + (context is not None)):
        table.columns[j].justify = "left"
    return table


def context_text(ids: np.ndarray, position: int, vocab: list[str] | None, width: int = 16) -> str:
    """The last tokens up to and including ``position`` (what the model had read), quoted."""
    if vocab is None:
        return " ".join(str(int(i)) for i in ids[max(0, position - 3):position + 1])
    parts = []
    seen = ids[:position + 1]
    for i in seen[::-1]:
        i = int(i)
        parts.append(vocab[i] if 0 <= i < len(vocab) else f"<{i}>")
        if sum(map(len, parts)) >= width:
            break
    text = "".join(reversed(parts))
    cut = len(parts) < len(seen) or len(text) > width
    return ("..." if cut else "") + repr(text[-width:])
