"""The sequence report against a plain per-token loop (math module, one token at a time)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from smx_cli.analysis.sequences import (evaluate_tokens, pad_to_ignore, sequence_report,
                                        shift_labels, top_p_count)
from smx_cli.core.xent import evaluate


def _loop_report(x, labels, ignore=-100, top_p=0.9):
    """Per sequence (tokens, total nll, correct) and per position (entropy, top-p size), by hand."""
    b, t, v = x.shape
    seqs, ent, cover, tokens = [], np.full((b, t), np.nan), np.zeros((b, t), int), []
    for i in range(b):
        n, nll, right = 0, [], 0
        for j in range(t):
            row = [float(z) for z in x[i, j]]
            m = max(row)
            lse = m + math.log(math.fsum(math.exp(z - m) for z in row))
            ps = [math.exp(z - lse) for z in row]
            srt = sorted(ps, reverse=True)
            acc, k = 0.0, 0
            while acc < top_p * math.fsum(ps):
                acc += srt[k]
                k += 1
            cover[i, j] = k
            y = int(labels[i, j])
            if y == ignore:
                continue
            ent[i, j] = -math.fsum(p * (z - lse) for p, z in zip(ps, row) if p > 0)
            n += 1
            nll.append(lse - row[y])
            right += int(max(range(v), key=lambda c: row[c]) == y)
            tokens.append((lse - row[y], i, j))
        seqs.append((n, math.fsum(nll), right))
    return seqs, ent, cover, sorted(tokens, key=lambda e: -e[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_equals_a_per_token_loop(seed):
    rng = np.random.default_rng(seed)
    b, t, v = 3, 7, 11
    x = rng.standard_normal((b, t, v)) * (1 + 3 * rng.random((b, t, 1)))
    ids = rng.integers(0, v, size=(b, t))
    ids[2, 4:] = 0  # padding
    labels = shift_labels(pad_to_ignore(ids, 0))
    res, cover = evaluate_tokens([(0, x.reshape(-1, v)[:9]), (9, x.reshape(-1, v)[9:])],
                                 b * t, v, labels.reshape(-1))
    rep = sequence_report(res, (b, t), top_p_counts=cover, worst=5)
    seqs, ent, cover_ref, worst = _loop_report(x, labels)
    total_nll = math.fsum(s[1] for s in seqs)
    total = sum(s[0] for s in seqs)
    for i, (n, nll, right) in enumerate(seqs):
        assert rep.tokens[i] == n
        assert rep.nll_sum[i] == pytest.approx(nll, rel=1e-13)
        assert rep.perplexity[i] == pytest.approx(math.exp(nll / n), rel=1e-12)
        assert rep.bits_per_token[i] == pytest.approx(nll / n / math.log(2), rel=1e-12)
        assert rep.accuracy[i] == right / n
    assert rep.corpus_tokens == total
    assert rep.corpus_perplexity == pytest.approx(math.exp(total_nll / total), rel=1e-12)
    # the corpus perplexity is token-weighted: not the mean of the sequences' perplexities
    mean_ppl = sum(math.exp(s[1] / s[0]) for s in seqs) / b
    assert rep.mean_sequence_perplexity == pytest.approx(mean_ppl, rel=1e-12)
    assert rep.corpus_perplexity != pytest.approx(mean_ppl, rel=1e-3)
    np.testing.assert_allclose(rep.entropy, ent, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(rep.top_p_count, cover_ref)
    assert [(w.sequence, w.position) for w in rep.worst] == [(i, j) for _, i, j in worst[:5]]
    for w, (nll, _, _) in zip(rep.worst, worst):
        assert w.nll == pytest.approx(nll, rel=1e-12)
        assert w.p_true == pytest.approx(math.exp(-nll), rel=1e-12)


def test_shift_matches_hugging_face_slicing():
    """Shifting with an ignored last position = scoring logits[:, :-1] against ids[:, 1:]."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 9))
    ids = rng.integers(0, 9, size=(2, 6))
    hf = evaluate(x[:, :-1].reshape(-1, 9), ids[:, 1:].reshape(-1))
    ours = evaluate(x.reshape(-1, 9), shift_labels(ids).reshape(-1))
    assert ours.reduced == hf.reduced and ours.counted == hf.counted


def test_top_p_count_edges():
    assert top_p_count(np.log([[1.0, 0.0, 0.0]])).tolist() == [1]
    assert top_p_count(np.log(np.full((1, 10), 0.1))).tolist() == [9]
    assert top_p_count(np.log([[0.5, 0.4, 0.1]]), 0.9).tolist() == [2]
    assert top_p_count(np.array([[np.nan, 0.0]])).tolist() == [0]
    assert top_p_count(np.zeros((0, 3))).shape == (0,)


def test_shift_refuses_non_integer_ids_and_wrong_rank():
    with pytest.raises(ValueError, match=r"token id at \(0, 1\) is 1.5, not an integer"):
        shift_labels(np.array([[1.0, 1.5]]))
    with pytest.raises(ValueError, match="needs \\(batch, tokens\\) ids"):
        shift_labels(np.array([1, 2, 3]))


def test_report_shape_mismatch_and_all_ignored():
    res = evaluate(np.zeros((4, 3)), [-100] * 4)
    with pytest.raises(ValueError, match="4 positions do not make 3 sequences"):
        sequence_report(res, (3, 2))
    rep = sequence_report(res, (2, 2))
    assert rep.corpus_tokens == 0 and math.isnan(rep.corpus_perplexity)
    assert np.isnan(rep.perplexity).all() and rep.worst == []


def _loop_top_p(row, p=0.9):
    m = max(row)
    ps = sorted((math.exp(z - m) for z in row), reverse=True)
    total, acc = math.fsum(ps), 0.0
    for k, q in enumerate(ps, start=1):
        acc += q
        if acc >= p * total:
            return k
    return len(ps)


@pytest.mark.parametrize("scale", [0.0, 1e-3, 0.5, 3.0, 20.0, 200.0])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_top_p_count_equals_a_sorted_loop(scale, p):
    rng = np.random.default_rng(int(scale * 10) + int(p * 100))
    x = rng.standard_normal((40, 300)) * scale
    x[3, :] = np.round(x[3, :])  # ties
    x[5, :5] = 50.0  # a few dominant tokens
    np.testing.assert_array_equal(top_p_count(x, p), [_loop_top_p(list(r), p) for r in x])
    np.testing.assert_array_equal(top_p_count(x.astype(np.float32), p),
                                  [_loop_top_p([float(v) for v in r], p)
                                   for r in x.astype(np.float32)])


def _loop_top_p_margin(row, p):
    """The sorted-loop count and how far (relative to p Z) its decision was from a tie."""
    finite = [v for v in row if math.isfinite(v)]
    if len(finite) < len(row) and any(math.isnan(v) or v == math.inf for v in row) or not finite:
        return 0, math.inf
    m = max(finite)
    ps = sorted((math.exp(v - m) if v != -math.inf else 0.0 for v in row), reverse=True)
    total = math.fsum(ps)
    target, acc = p * total, 0.0
    for k, q in enumerate(ps, start=1):
        before = acc
        acc += q  # a float64 running sum: its error (< k u) is far below the 1e-5 margin
        if acc >= target:
            return k, min(acc - target, target - before) / target
    return len(ps), math.inf


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("c", [1, 7, 8, 9, 300, 5000])
@pytest.mark.parametrize("p", [1e-6, 0.5, 0.9, 0.99])
def test_top_p_count_of_16_and_32_bit_logits_on_both_engines(dtype, c, p):
    """The compiled pass (16/32-bit logits) and the numpy reference against an
    exact sorted loop on the format's values: equal except on rows whose top-k
    sum lies within float32 rounding (1e-5 relative) of p Z."""
    import ml_dtypes

    from smx_cli.core import native

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(c + int(p * 1000))
    x = rng.standard_normal((24, c)) * rng.choice([0.3, 3.0, 12.0], size=(24, 1))
    x[1] = 0.0                                    # uniform: ties everywhere
    x[2, : max(1, c // 3)] = 20.0                 # a block of tied maxima
    x[3, ::2] = -np.inf                           # masked entries
    x[4] = -np.inf                                # fully masked: 0
    x[5, c // 2] = np.nan                         # NaN: 0
    x[6, c - 1] = np.inf                          # +inf: 0
    x[7, 0] = 60.0                                # one dominant token
    x[8] = np.round(x[8])                         # ties between some
    x = x.astype(dt)
    rows = [[float(v) for v in r] for r in x.astype(np.float64)]
    ref = [_loop_top_p_margin(r, p) for r in rows]
    got_native = top_p_count(x, p)
    with native.numpy_engine():
        got_numpy = top_p_count(x, p)
    assert got_native[4] == got_native[5] == got_native[6] == 0
    assert got_native[7] == 1 or (c == 1 and got_native[7] == 1)
    for got in (got_native, got_numpy):
        for i, (k, margin) in enumerate(ref):
            if margin > 1e-5:
                assert got[i] == k, (i, got[i], k)
            else:  # a near tie: one of the two neighbouring counts
                assert abs(int(got[i]) - k) <= 1, (i, got[i], k)
