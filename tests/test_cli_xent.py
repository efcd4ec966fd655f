"""``smx xent`` end to end: what the user sees, what reaches the math, how errors look.

Expected values are computed here independently (scipy / numpy in float64 from the
definitions, or PyTorch when installed), never copied from smx's output.
"""
import json
import math
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import logsumexp, softmax

from conftest import SAMPLES
from smx_cli.cli import cli

LOGITS_NPY = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
LOGITS_CSV = os.path.join(SAMPLES, "mnist_lenet_logits.csv")
LABELS_NPY = os.path.join(SAMPLES, "mnist_lenet_labels.npy")
LABELS_CSV = os.path.join(SAMPLES, "mnist_lenet_labels.csv")


def run(*args, input=None):
    return CliRunner().invoke(cli, ["xent", *map(str, args)], input=input,
                              catch_exceptions=False)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.exit_code == 0, r.stdout + r.stderr
    return r


def as_json(*args):
    return json.loads(ok(*args, "--format", "json").stdout)


@pytest.fixture(scope="module")
def mnist():
    x = np.load(LOGITS_NPY).astype(np.float64)
    y = np.load(LABELS_NPY)
    # loss = log sum_c exp(x_c - x_y) = log1p(sum_{c != y} exp(x_c - x_y)): x_c - x_y is
    # exact for float32 logits, and log1p keeps the small losses' digits
    d = x - x[np.arange(len(y)), y][:, None]
    d[np.arange(len(y)), y] = -np.inf
    loss = np.log1p(np.exp(d).sum(axis=1))
    return x, y, loss


@pytest.fixture
def small(tmp_path):
    """A 6 x 4 problem with its logits (CSV with a header and an NPY), labels, weights."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 4)) * 2
    y = np.array([0, 3, 1, 1, 2, 0])
    w = np.array([1.0, 2.0, 0.5, 3.0])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "x.csv").write_text(
        "a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
    (tmp_path / "y.txt").write_text("\n".join(str(int(v)) for v in y) + "\n")
    (tmp_path / "w.csv").write_text(",".join(str(v) for v in w) + "\n")
    return tmp_path, x, y, w


def ref_loss(x, y, w=None, eps=0.0, ignore_index=-100, reduction="mean"):
    """PyTorch's definitions, in float64 numpy (the formulas of LossNLL.cpp)."""
    n, c = x.shape
    lp = x - logsumexp(x, axis=1, keepdims=True)
    w = np.ones(c) if w is None else np.asarray(w)
    keep = y != ignore_index
    yy = np.where(keep, y, 0)
    per = (1 - eps) * -w[yy] * lp[np.arange(n), yy] + eps / c * -(lp * w).sum(axis=1)
    per = np.where(keep, per, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / w[yy][keep].sum()


def ref_grad(x, y, w=None, eps=0.0, reduction="mean"):
    n, c = x.shape
    w = np.ones(c) if w is None else np.asarray(w)
    a = np.zeros((n, c))
    a[np.arange(n), y] = (1 - eps) * w[y]
    a += eps / c * w
    g = a.sum(axis=1, keepdims=True) * softmax(x, axis=1) - a
    return g / w[y].sum() if reduction == "mean" else g


def table_rows(text):
    """(row index, cells) of the per-sample table's body lines."""
    out = []
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 5 and cells[0].isdigit() and cells[-1] in ("yes", "NO", "-"):
            out.append((int(cells[0]), cells))
    return out


def close(a, b, rtol=1e-12):
    return abs(a - b) <= rtol * abs(b)


# ----------------------------------------------------------------------------
# MNIST


def test_mnist_reports_accuracy_and_mean_loss(mnist):
    x, y, loss = mnist
    r = ok(LOGITS_NPY, "--labels", LABELS_NPY)
    assert "98.92 %" in r.stdout
    assert f"{np.mean(np.argmax(x, axis=1) == y) * 100:.2f} %" == "98.92 %"
    assert "2,500 samples x 10 classes" in r.stdout
    doc = as_json(LOGITS_NPY, "--labels", LABELS_NPY)
    assert close(doc["loss"], loss.mean())
    assert doc["accuracy"] == pytest.approx(0.9892, abs=0) or doc["accuracy"] == 0.9892
    assert doc["samples"] == 2500 and doc["classes"] == 10
    m = re.search(r"loss \(mean\)\s+([0-9.e-]+)", r.stdout)
    assert m and close(float(m.group(1)), loss.mean(), rtol=1e-9)
    assert len(doc["per_sample"]) == 2500
    assert all(list(rec) == doc["columns"] for rec in doc["per_sample"])
    got = np.array([rec["loss"] for rec in doc["per_sample"]])
    assert np.max(np.abs(got - loss) / loss) <= 1e-12


def test_mnist_summary_statistics(mnist):
    x, y, loss = mnist
    doc = as_json(LOGITS_NPY, "--labels", LABELS_NPY)
    p = softmax(x, axis=1)
    rank = (x > x[np.arange(len(y)), y][:, None]).sum(axis=1)
    assert doc["top5_accuracy"] == np.mean(rank < 5)
    assert close(doc["perplexity"], math.exp(loss.mean()), 1e-12)
    assert close(doc["mean_entropy"], np.mean(-(p * np.log(p)).sum(axis=1)), 1e-10)
    assert doc["ignored"] == 0
    one_minus = np.where(np.arange(10) != y[:, None], p, 0).sum(axis=1)
    assert doc["vanished_gradients"] == int(np.sum(one_minus <= np.finfo(np.float32).eps))


def test_mnist_csv_labels_with_header_give_the_same_result(mnist):
    _, _, loss = mnist
    a = as_json(LOGITS_NPY, "--labels", LABELS_CSV)
    b = as_json(LOGITS_NPY, "--labels", LABELS_NPY)
    assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]
    # the CSV logits carry 9 digits: the same loss to 1e-7, class names from the header
    r = ok(LOGITS_CSV, "--labels", LABELS_CSV, "--rows", "3")
    assert "digit_0" in r.stdout
    c = as_json(LOGITS_CSV, "--labels", LABELS_CSV)
    assert close(c["loss"], loss.mean(), 1e-7)


def test_worst_lists_the_highest_losses_in_order(mnist):
    _, y, loss = mnist
    r = ok(LOGITS_CSV, "--labels", LABELS_CSV, "--worst", "5")
    rows = table_rows(r.stdout)
    expect = np.argsort(-loss, kind="stable")[:5]
    assert [i for i, _ in rows] == expect.tolist()
    shown = [float(cells[4]) for _, cells in rows]
    assert shown == sorted(shown, reverse=True)
    for (i, cells), v in zip(rows, shown):
        assert cells[1] == f"digit_{y[i]}"
        assert close(v, loss[i], 1e-5)
    assert "5 highest-loss samples of 2,500" in r.stdout


def test_rows_caps_the_table_and_says_what_was_elided():
    r = ok(LOGITS_NPY, "--labels", LABELS_NPY, "--rows", "7")
    assert [i for i, _ in table_rows(r.stdout)] == list(range(7))
    assert "2,493 more samples not shown" in r.stdout
    full = ok(LOGITS_NPY, "--labels", LABELS_NPY)
    assert len(table_rows(full.stdout)) == 20          # the default cap, for N = 2500
    for line in r.stdout.splitlines():
        assert len(line) <= 100


def test_grad_out_matches_the_gradient(mnist, tmp_path):
    x, y, _ = mnist
    out = tmp_path / "g.npy"
    r = ok(LOGITS_NPY, "--labels", LABELS_NPY, "--grad-out", out)
    assert f"wrote {out}" in r.stderr.replace("\n", "")
    g = np.load(out)
    assert g.shape == (2500, 10)
    ref = ref_grad(x, y)
    assert np.abs(g - ref).max() <= 1e-12 * np.abs(ref).max()


def test_grad_out_agrees_with_torch(small, torch):
    d, x, y, w = small
    for args, kw in [((), {}), (("--label-smoothing", "0.2", "--weight", "1,2,0.5,3"),
                                {"label_smoothing": 0.2, "weight": torch.tensor(w)}),
                     (("--reduction", "sum"), {"reduction": "sum"})]:
        ok(d / "x.npy", "--labels", d / "y.npy", "--grad-out", d / "g.csv", *args)
        g = np.loadtxt(d / "g.csv", delimiter=",", skiprows=0, ndmin=2)
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.functional.cross_entropy(xt, torch.tensor(y), **kw).backward()
        ref = xt.grad.numpy()
        assert np.abs(g - ref).max() <= 1e-12 * np.abs(ref).max()


def test_grad_shows_gradients_for_the_displayed_rows(small):
    d, x, y, _ = small
    r = ok(d / "x.csv", "--labels", d / "y.txt", "--grad", "--rows", "2")
    assert "dL/dlogits" in r.stdout
    ref = ref_grad(x, y)
    lines = [ln.split() for ln in r.stdout.split("dL/dlogits")[1].splitlines()]
    body = [c for c in lines if c and c[0] in ("0", "1") and len(c) == 5]
    assert [int(c[0]) for c in body] == [0, 1]
    for c in body:
        got = np.array([float(v) for v in c[1:]])
        np.testing.assert_allclose(got, ref[int(c[0])], rtol=5e-3)  # 3 digits shown


def test_grad_table_stays_readable_for_many_classes(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 300))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([1, 200, 299]))
    r = ok(tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--grad")
    for line in r.stdout.splitlines():
        assert len(line) <= 100
    assert "300 classes" in r.stdout
    # the true class has the largest |gradient| of a row: it is the first one shown
    assert re.search(r"^\s+0\s+1: -0.333", r.stdout, re.M)
    assert re.search(r"^\s+2\s+299: -0.333", r.stdout, re.M)


# ----------------------------------------------------------------------------
# every option reaches the math


@pytest.mark.parametrize("args,kw", [
    (["--reduction", "sum"], {"reduction": "sum"}),
    (["--label-smoothing", "0.3"], {"eps": 0.3}),
    (["--label-smoothing", "1"], {"eps": 1.0}),
    (["--weight", "1,2,0.5,3"], {"w": [1, 2, 0.5, 3]}),
    (["--weight", "{d}/w.csv", "--label-smoothing", "0.1"], {"w": [1, 2, 0.5, 3], "eps": 0.1}),
    (["--ignore-index", "1"], {"ignore_index": 1}),
    (["--ignore-index", "0", "--weight", "1,2,0.5,3", "--label-smoothing", "0.2"],
     {"ignore_index": 0, "w": [1, 2, 0.5, 3], "eps": 0.2}),
])
def test_options_reach_the_math(small, args, kw):
    d, x, y, _ = small
    args = [a.format(d=d) for a in args]
    doc = as_json(d / "x.npy", "--labels", d / "y.npy", *args)
    expect = ref_loss(x, y, **kw)
    assert close(doc["loss"], expect)
    assert not close(doc["loss"], ref_loss(x, y), 1e-6)     # the option changed the result
    if "ignore_index" in kw:
        assert doc["ignored"] == int(np.sum(y == kw["ignore_index"]))


def test_reduction_none_writes_per_sample_losses(small):
    d, x, y, _ = small
    doc = as_json(d / "x.npy", "--labels", d / "y.npy", "--reduction", "none",
                  "--ignore-index", "1")
    assert doc["loss"] is None
    per = doc["per_sample"]
    got = np.array([rec["loss"] for rec in per])
    assert np.max(np.abs(got - ref_loss(x, y, ignore_index=1, reduction="none"))) <= 1e-15
    assert [rec["ignored"] for rec in per] == (y == 1).tolist()   # JSON true/false
    assert [rec["label"] for rec in per] == np.where(y == 1, -1, y).tolist()
    p_true = np.array([np.nan if rec["p_true"] is None else rec["p_true"] for rec in per])
    assert np.isnan(p_true[y == 1]).all()          # no true class: not class 0's probability
    np.testing.assert_allclose(p_true[y != 1], softmax(x, axis=1)[np.arange(6), y][y != 1],
                               rtol=1e-14)


def test_input_kinds(small):
    d, x, y, _ = small
    lp = x - logsumexp(x, axis=1, keepdims=True)
    np.save(d / "lp.npy", lp)
    np.save(d / "p.npy", np.exp(lp))
    base = as_json(d / "x.npy", "--labels", d / "y.npy")["loss"]
    nll = as_json(d / "lp.npy", "--labels", d / "y.npy", "--input-kind", "log-probs")
    assert close(nll["loss"], base) and nll["input_kind"] == "log-probs"
    # log-probs are read as they are: NLL of unnormalised scores is -x[y], not a softmax
    assert close(as_json(d / "x.npy", "--labels", d / "y.npy", "--input-kind",
                         "log-probs")["loss"], -x[np.arange(6), y].mean())
    assert close(as_json(d / "p.npy", "--labels", d / "y.npy", "--input-kind", "probs")["loss"],
                 base, 1e-12)


def test_probs_with_zero_on_true_class_is_an_infinite_loss(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[0.5, 0.0, 0.5], [0.1, 0.8, 0.1]]))
    np.save(tmp_path / "y.npy", np.array([1, 1]))
    r = ok(tmp_path / "p.npy", "--labels", tmp_path / "y.npy", "--input-kind", "probs")
    assert "non-finite loss" in r.stdout and "inf" in r.stdout
    assert "check the input" in r.stdout
    doc = as_json(tmp_path / "p.npy", "--labels", tmp_path / "y.npy", "--input-kind", "probs")
    assert doc["nonfinite_losses"] == 1 and doc["loss"] == "inf"
    s = run(tmp_path / "p.npy", "--labels", tmp_path / "y.npy", "--input-kind", "probs",
            "--strict")
    assert s.exit_code == 1 and "1 sample loss(es) are NaN or inf" in s.stderr


def test_label_column_by_name_and_index_with_class_names(tmp_path):
    x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [0.1, 0.2, 3.0], [1.0, 3.0, 0.0]])
    y = np.array([0, 1, 2, 0])
    names = ["cat", "dog", "bird"]
    body = "\n".join(",".join([repr(float(v)) for v in row] + [names[t]]) for row, t in zip(x, y))
    (tmp_path / "pets.csv").write_text("cat,dog,bird,label\n" + body + "\n")
    expect = ref_loss(x, y)
    for col in ("label", "3", "-1"):
        doc = as_json(tmp_path / "pets.csv", "--label-column", col)
        assert close(doc["loss"], expect) and doc["classes"] == 3
        assert doc["class_names"] == names
    r = ok(tmp_path / "pets.csv", "--label-column", "label")
    rows = table_rows(r.stdout)
    assert [cells[1] for _, cells in rows] == ["cat", "dog", "bird", "cat"]
    assert rows[3][1][2] == "dog" and rows[3][1][-1] == "NO"
    # the label column in the middle, integers, no header
    (tmp_path / "mid.csv").write_text("\n".join(
        ",".join([repr(float(row[0])), str(t), repr(float(row[1])), repr(float(row[2]))]) for row, t in zip(x, y)))
    assert close(as_json(tmp_path / "mid.csv", "--label-column", "1")["loss"], expect)


def test_labels_file_with_class_names(tmp_path):
    x = np.array([[2.0, 1.0], [0.5, 2.5], [3.0, 0.0]])
    (tmp_path / "x.csv").write_text("cat,dog\n" + "\n".join(
        ",".join(repr(float(v)) for v in row) for row in x) + "\n")
    (tmp_path / "y.csv").write_text("label\ndog\ncat\ncat\n")
    doc = as_json(tmp_path / "x.csv", "--labels", tmp_path / "y.csv")
    assert close(doc["loss"], ref_loss(x, np.array([1, 0, 0])))


def test_probability_target_matrix(small):
    d, x, y, w = small
    rng = np.random.default_rng(2)
    t = rng.dirichlet(np.ones(4), 6)
    (d / "t.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in t) + "\n")
    lp = x - logsumexp(x, axis=1, keepdims=True)
    for args, eps, ww in [((), 0.0, np.ones(4)), (("--label-smoothing", "0.1", "--weight",
                                                   "1,2,0.5,3"), 0.1, w)]:
        doc = as_json(d / "x.npy", "--labels", d / "t.csv", *args)
        tt = (1 - eps) * t + eps / 4
        assert doc["target_kind"] == "prob"
        assert close(doc["loss"], -(ww * tt * lp).sum() / 6)


def test_output_files(small):
    d, x, y, _ = small
    r = ok(d / "x.npy", "--labels", d / "y.npy", "-o", d / "out.csv")
    assert "wrote" in r.stderr
    lines = (d / "out.csv").read_text().splitlines()
    assert lines[0] == ("row,label,predicted,p_true,loss,margin,correct,ignored,top5,"
                        "entropy")
    cells = [ln.split(",") for ln in lines[1:]]
    got = np.array([float(c[4]) for c in cells])
    assert np.max(np.abs(got - ref_loss(x, y, reduction="none"))) <= 1e-15
    # integers are written as integers, flags as true/false: never 1.0 or 0.0
    assert [c[1] for c in cells] == [str(v) for v in y.tolist()]
    assert [c[2] for c in cells] == [str(v) for v in np.argmax(x, axis=1).tolist()]
    assert {c[6] for c in cells} <= {"true", "false"} and {c[7] for c in cells} == {"false"}
    ok(d / "x.npy", "--labels", d / "y.npy", "-o", d / "out.json")
    doc = json.loads((d / "out.json").read_text())
    assert close(doc["loss"], ref_loss(x, y)) and len(doc["per_sample"]) == 6
    csv = ok(d / "x.npy", "--labels", d / "y.npy", "--format", "csv").stdout
    assert csv.splitlines() == lines


# ----------------------------------------------------------------------------
# all ignored, strict


def test_all_ignored_mean_is_reported_not_a_bare_nan(small):
    d, x, _, _ = small
    np.save(d / "ign.npy", np.full(6, -100))
    r = ok(d / "x.npy", "--labels", d / "ign.npy")
    assert "undefined" in r.stdout and "every label is the ignore index" in r.stdout
    assert not re.search(r"loss \(mean\)\s+nan", r.stdout)
    j = run(d / "x.npy", "--labels", d / "ign.npy", "--format", "json")
    assert j.exit_code == 0
    doc = json.loads(j.stdout)
    assert doc["loss"] is None and doc["loss_undefined"] is True and doc["ignored"] == 6
    assert "undefined" in j.stderr
    s = run(d / "x.npy", "--labels", d / "ign.npy", "--strict")
    assert s.exit_code == 1 and "undefined" in s.stderr
    assert json.loads(ok(d / "x.npy", "--labels", d / "ign.npy", "--reduction", "sum",
                         "--format", "json").stdout)["loss"] == 0.0


def test_strict_passes_on_finite_losses(small):
    d, _, _, _ = small
    assert run(d / "x.npy", "--labels", d / "y.npy", "--strict").exit_code == 0


# ----------------------------------------------------------------------------
# errors: one line on stderr, exit 1 (data) or 2 (usage), no traceback, no file


@pytest.mark.parametrize("setup,args,code,match", [
    (lambda d: np.save(d / "bad.npy", np.arange(5) % 4), ["--labels", "{d}/bad.npy"], 1,
     r"5 labels for 6 rows"),
    (lambda d: np.save(d / "bad.npy", np.array([0, 1, 2, 4, 7, 0])), ["--labels", "{d}/bad.npy"],
     1, r"label 3 is 4, outside \[0, 4\)"),
    (lambda d: (d / "bad.txt").write_text("0\n1\n2.5\n1\n0\n0\n"), ["--labels", "{d}/bad.txt"],
     1, r"label 2 is 2.5, not an integer"),
    (lambda d: (d / "bad.txt").write_text("0\n1\nfoo\n1\n0\n0\n"), ["--labels", "{d}/bad.txt"],
     1, r"line 3: label 'foo' is neither a number nor a class name"),
    (lambda d: (d / "bad.csv").write_text("0.5,0.5,0,0\n" * 3 + "0.2,0.2,0.2,0.2\n" + "1,0,0,0\n" * 2),
     ["--labels", "{d}/bad.csv"], 1, r"probability target row 3 sums to 0.8"),
    (lambda d: (d / "bad.csv").write_text("0.5,0.5,0,0\n" * 4 + "1.5,-0.5,0,0\n" + "1,0,0,0\n"),
     ["--labels", "{d}/bad.csv"], 1, r"probability target row 4, class 1 is -0.5"),
    (lambda d: (d / "t.csv").write_text("0.5,0.5,0,0\n" * 6),
     ["--labels", "{d}/t.csv", "--ignore-index", "0"], 1, r"ignore_index=0 is not supported"),
    (None, ["--labels", "{d}/y.npy", "--weight", "1,2,3"], 1, r"3 class weights for 4 classes"),
    (None, ["--labels", "{d}/y.npy", "--weight", "1,-2,3,4"], 1, r"weight 1 is -2.0"),
    (lambda d: (d / "w2.csv").write_text("1,2\n"), ["--labels", "{d}/y.npy", "--weight",
                                                    "{d}/w2.csv"], 1, r"2 class weights"),
    (None, ["--labels", "{d}/y.npy", "--weight", "{d}/nope.csv"], 1, r"nope.csv: no such file"),
    (None, ["--labels", "{d}/missing.npy"], 1, r"missing.npy: no such file"),
    (None, ["--label-column", "nope"], 1, r"no label column 'nope'"),
    (None, ["--labels", "{d}/y.npy", "--label-smoothing", "1.5"], 2, r"label-smoothing"),
    (None, ["--labels", "{d}/y.npy", "--label-smoothing", "-0.1"], 2, r"label-smoothing"),
    (None, [], 2, r"exactly one of --labels FILE or --label-column"),
    (None, ["--labels", "{d}/y.npy", "--label-column", "a"], 2, r"exactly one of"),
    (None, ["--labels", "{d}/y.npy", "--reduction", "avg"], 2, r"reduction"),
])
def test_errors_are_one_line_and_write_nothing(small, setup, args, code, match):
    d = small[0]
    if setup:
        setup(d)
    args = [a.format(d=d) for a in args]
    for out in ("out.json", "out.csv"):
        r = run(d / "x.csv", *args, "-o", d / out, "--grad-out", d / ("g_" + out))
        assert r.exit_code == code, r.stdout + r.stderr
        assert "Traceback" not in r.stderr + r.stdout
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        if code == 1:
            assert len(err) == 1 and err[0].startswith("Error: "), r.stderr
        assert re.search(match, r.stderr), r.stderr
        assert not (d / out).exists() and not (d / ("g_" + out)).exists()
        assert r.stdout == ""


# ----------------------------------------------------------------------------
# confident samples, ignored rows, stdin, NPY label column


def test_confident_samples_vanished_gradients_and_ignored_rows(tmp_path):
    x = np.array([[30, 0, 0], [0, 1000, 0], [1, 2, 3], [40, 0, 0], [5, 0, 0]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = ok(tmp_path / "x.npy", "--labels", "-", input="0\n0\n-100\n0\n0\n")
    rows = dict(table_rows(r.stdout))
    assert rows[2][1] == "ignored" and rows[2][-1] == "-"
    loss0 = math.log1p(2 * math.exp(-30.0))
    assert close(float(rows[0][4]), loss0, 1e-5) and float(rows[0][4]) > 0
    assert rows[1][4] == "1000" and rows[1][-1] == "NO"
    # 1 - p(true) <= float32 eps (1.19e-07) for the rows at 30 and 40, not at 5
    assert re.search(r"vanished gradient\s+2 samples", r.stdout)
    assert re.search(r"ignored\s+1 sample\s", r.stdout)
    doc = json.loads(run(tmp_path / "x.npy", "--labels", "-", "--format", "json",
                         input="0\n0\n-100\n0\n0\n").stdout)
    assert doc["vanished_gradients"] == 2 and doc["ignored"] == 1
    per = [rec["loss"] for rec in doc["per_sample"]]
    assert close(per[0], loss0) and per[1] == 1000.0
    assert close(doc["loss"], (loss0 + 1000 + math.log1p(2 * math.exp(-40.0))
                               + math.log1p(2 * math.exp(-5.0))) / 4)
    # with label smoothing a saturated sample's gradient does not vanish
    sm = json.loads(run(tmp_path / "x.npy", "--labels", "-", "--format", "json",
                        "--label-smoothing", "0.1", input="0\n0\n-100\n0\n0\n").stdout)
    assert sm["vanished_gradients"] == 0


def test_label_column_of_an_npy_array(small):
    d, x, y, _ = small
    np.save(d / "xy.npy", np.c_[x[:, :2], y, x[:, 2:]])
    doc = as_json(d / "xy.npy", "--label-column", "2")
    assert doc["classes"] == 4 and close(doc["loss"], ref_loss(x, y))


def test_stdin_for_both_is_a_usage_error():
    r = run("-", "--labels", "-", input="1,2\n")
    assert r.exit_code == 2 and "cannot both be -" in r.stderr


def test_help_has_examples():
    r = ok("--help")
    assert "Examples:" in r.stdout and "--label-smoothing" in r.stdout


# ----------------------------------------------------------------------------
# --check-grad (issue 5)


def test_check_grad_passes_on_mnist():
    r = ok(LOGITS_NPY, "--labels", LABELS_NPY, "--check-grad")
    panel = " ".join(r.stdout[r.stdout.index("gradient check"):].replace("│", " ").split())
    assert re.search(r"dL/dlogits pass: 8 rows, 80 entries, max \|error\| \S+, max relative "
                     r"\S+ tolerance \|analytic - fd\| <= 4e-12 \+ 1e-05 \|fd\|", panel), panel
    assert "FAIL" not in r.stdout


@pytest.mark.parametrize("args", [
    ["--reduction", "sum"],
    ["--reduction", "none", "--label-smoothing", "0.2"],
    ["--weight", "1,2,0.5,1,1,1,3,1,1,0", "--label-smoothing", "0.1", "--ignore-index", "7"],
])
def test_check_grad_passes_on_mnist_with_options(args):
    js = as_json(LOGITS_NPY, "--labels", LABELS_NPY, "--check-grad", *args)
    (check,) = js["grad_check"]
    assert check["passed"] and check["rows_checked"] == 8 and check["entries_checked"] == 80
    assert check["max_rel_error"] < 1e-6


def test_check_grad_tolerance_follows_the_mean_divisor(mnist):
    js = as_json(LOGITS_NPY, "--labels", LABELS_NPY, "--check-grad")
    # the mean divides by N = 2500: the absolute tolerance 1e-8 scales with it
    assert js["grad_check"][0]["atol"] == pytest.approx(1e-8 / 2500)


def test_check_grad_fails_on_a_broken_gradient(monkeypatch, tmp_path):
    from smx_cli.core import xent
    real = xent.evaluate

    def broken(x2, target, **kw):
        res = real(x2, target, **kw)
        if res.grad is not None:
            res.grad[:, 0] += 1e-3 * np.abs(res.grad).max()  # a small bias on one class
        return res

    monkeypatch.setattr(xent, "evaluate", broken)
    r = run(LOGITS_NPY, "--labels", LABELS_NPY, "--check-grad", "-o", tmp_path / "out.json")
    assert r.exit_code == 1
    assert "gradient check: FAILED" in r.stdout and "FAIL" in r.stdout
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("Error: --check-grad: the cross-entropy gradient "
                                               "disagrees with finite differences"), r.stderr
    assert json.loads((tmp_path / "out.json").read_text())["grad_check"][0]["passed"] is False


def test_check_grad_for_probability_inputs(small):
    d, x, y, _ = small
    np.save(d / "p.npy", softmax(x, axis=1))
    r = ok(d / "p.npy", "--labels", d / "y.npy", "--input-kind", "probs", "--check-grad")
    panel = " ".join(r.stdout[r.stdout.index("gradient check"):].replace("│", " ").split())
    assert "dL/dlogits pass: 6 rows" in panel and "(logits = log of the probabilities)" in panel


# ----------------------------------------------------------------------------
# streaming big NPY logits (issue 6)


@pytest.fixture
def spy_blocks(monkeypatch):
    """Record the row blocks the streamed path reads (and make them small)."""
    from smx_cli.cli import xent as cmd_xent
    from smx_cli.io import stream
    seen = []
    real = stream.iter_npy_blocks

    def spy(path, *, block_bytes):
        for s0, n, xb in real(path, block_bytes=block_bytes):
            seen.append((s0, len(xb)))
            yield s0, n, xb

    monkeypatch.setattr(stream, "iter_npy_blocks", spy)
    monkeypatch.setattr(cmd_xent, "_STREAM_BLOCK", 7 * 10 * 4)  # 7 rows of 10 float32
    return seen


def _json_without_source(*args, input=None):
    r = run(*args, "--format", "json", input=input)
    assert r.exit_code == 0, r.stderr
    js = json.loads(r.stdout)
    js.pop("source")
    return js


@pytest.mark.parametrize("args", [
    [],
    ["--reduction", "sum"],
    ["--reduction", "none"],
    ["--weight", "1,2,0.5,1,1,1,3,1,1,0", "--label-smoothing", "0.1", "--ignore-index", "7"],
    ["--weight", "0,0,0,0,0,0,0,0,0,0"],
    ["--ignore-index", "1", "--threads", "1"],
])
def test_streamed_mnist_equals_the_whole_array(spy_blocks, args):
    streamed = _json_without_source(LOGITS_NPY, "--labels", LABELS_NPY, *args)
    assert len(spy_blocks) == -(-2500 // 7) and spy_blocks[-1] == (2499, 1)
    with open(LOGITS_NPY, "rb") as fh:  # stdin: the whole-array path
        whole = _json_without_source("-", "--labels", LABELS_NPY, *args, input=fh.read())
    assert streamed == whole


@pytest.mark.parametrize("args", [["--worst", "5"], ["--rows", "30", "--reduction", "none"]])
def test_streamed_table_equals_the_whole_array(spy_blocks, monkeypatch, args):
    from smx_cli.cli import xent as cmd_xent
    streamed = ok(LOGITS_NPY, "--labels", LABELS_NPY, *args).stdout
    assert spy_blocks
    monkeypatch.setattr(cmd_xent, "_streamable", lambda *a: None)  # the whole-array path
    whole = ok(LOGITS_NPY, "--labels", LABELS_NPY, *args).stdout
    assert len(spy_blocks) == -(-2500 // 7)  # not read again in blocks
    assert streamed == whole
    assert "98.92 %" in streamed


def test_streamed_counts_non_finite_inputs(spy_blocks, tmp_path):
    x = np.zeros((20, 10), dtype=np.float32)
    x[3, 1] = np.nan
    x[11, :] = -np.inf
    x[18, 2] = np.inf
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(20) % 10)
    r = ok(tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert len(spy_blocks) == 3
    assert re.search(r"non-finite input\s+NaN 1\s+\+inf 1\s+-inf 10", r.stdout), r.stdout


@pytest.mark.parametrize("args", [["--grad"], ["--grad-out", "{d}/g.npy"], ["--check-grad"],
                                  ["--axis", "0", "--labels", "{d}/y4.npy"],
                                  ["--label-column", "4"]])
def test_whole_array_path_when_an_option_needs_it(spy_blocks, small, args):
    d, x, y, _ = small
    np.save(d / "y4.npy", np.array([0, 5, 1, 2]))  # --axis 0: 4 rows of 6 classes
    np.save(d / "xy.npy", np.column_stack([x, y]))  # the labels in column 4
    if "--label-column" in args:
        ok(d / "xy.npy", *args)
    else:
        if "--labels" not in args:
            args = ["--labels", "{d}/y.npy", *args]
        ok(d / "x.npy", *[a.format(d=d) for a in args])
    assert spy_blocks == []
    ok(d / "x.npy", "--labels", d / "y.npy")
    assert spy_blocks  # the same file without the option is streamed


def test_streamed_errors_are_one_line(spy_blocks, small, tmp_path):
    d = small[0]
    np.save(d / "bad.npy", np.array([0, 1, 2, 4, 7, 0]))
    r = run(d / "x.npy", "--labels", d / "bad.npy", "-o", d / "out.json")
    assert r.exit_code == 1 and r.stdout == "" and not (d / "out.json").exists()
    assert r.stderr.strip() == (f"Error: {d / 'bad.npy'}: label 3 is 4, outside [0, 4) and not "
                                "the ignore index -100; 2 label(s) out of range")
    # a truncated NPY: the whole-array reader reports it, as before
    data = (d / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    r = run(tmp_path / "cut.npy", "--labels", d / "y.npy")
    assert r.exit_code == 1 and "truncated NPY" in r.stderr and len(r.stderr.splitlines()) == 1


def test_threads_reach_the_math(monkeypatch, small):
    from smx_cli.cli import xent as cmd_xent
    from smx_cli.core import xent
    seen = []
    real = xent.evaluate

    def spy(*a, **kw):
        seen.append(kw.get("threads"))
        return real(*a, **kw)

    monkeypatch.setattr(xent, "evaluate", spy)  # what evaluate_blocks calls per block
    monkeypatch.setattr(cmd_xent, "evaluate", spy)
    d = small[0]
    ok(d / "x.npy", "--labels", d / "y.npy", "--threads", "3")   # streamed
    ok(d / "x.csv", "--labels", d / "y.npy", "--threads", "2")   # whole array
    assert seen == [3, 2]
    assert run(d / "x.npy", "--labels", d / "y.npy", "--threads", "0").exit_code == 2


def test_json_names_the_engine_that_computed(tmp_path):
    from smx_cli.core import native

    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0, 3.0], [0.0, 5.0, -1.0]]))
    np.save(tmp_path / "y.npy", np.array([2, 0]))
    doc = as_json(tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert doc["engine"] == native.engine()  # "numpy" under SMX_ENGINE=numpy
    # probabilities as input stay on the numpy path whatever the engine
    np.save(tmp_path / "p.npy", np.array([[0.2, 0.3, 0.5]]))
    np.save(tmp_path / "y1.npy", np.array([2]))
    doc = as_json(tmp_path / "p.npy", "--labels", tmp_path / "y1.npy", "--input-kind", "probs")
    assert doc["engine"] == "numpy"
