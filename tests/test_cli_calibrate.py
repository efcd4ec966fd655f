"""``smx calibrate`` end to end: what the user sees, what the files hold, how errors look.

Reference values are computed here from the definitions (numpy/scipy in float64), never
copied from smx's output.
"""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import log_softmax, softmax

from conftest import SAMPLES
from smx_cli.cli import cli

LOGITS_NPY = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
LOGITS_CSV = os.path.join(SAMPLES, "mnist_lenet_logits.csv")
LABELS_NPY = os.path.join(SAMPLES, "mnist_lenet_labels.npy")
LABELS_CSV = os.path.join(SAMPLES, "mnist_lenet_labels.csv")
MNIST = [LOGITS_NPY, "--labels", LABELS_NPY]


def run(*args, env=None):
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)], catch_exceptions=False,
                              env=env)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.exit_code == 0, r.stdout + r.stderr
    return r


def fails(code, *args):
    r = run(*args)
    assert r.exit_code == code, r.stdout + r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("Error:")]
    if code == 1:  # bad data: exactly one line (usage errors get click's usage hint here;
        #            `smx` itself prints them as one line, see test_main_usage_error_is_one_line)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


def as_json(*args):
    return json.loads(ok(*args, "--format", "json", "--bootstrap", "0").stdout)


@pytest.fixture(scope="module")
def mnist():
    return np.load(LOGITS_NPY).astype(np.float64), np.load(LABELS_NPY)


def _ece_plain(p, y, m=15):
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    total = 0.0
    for b in range(m):
        inb = ((conf > b / m) & (conf <= (b + 1) / m)) | ((b == 0) & (conf == 0))
        if inb.any():
            total += inb.mean() * abs(correct[inb].mean() - conf[inb].mean())
    return total


def test_mnist_table_at_80_columns(mnist):
    r = ok(*MNIST, env={"COLUMNS": "80"})
    out = r.stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    for text in ("ECE (l1)", "MCE", "ACE", "class-wise ECE", "debiased L2", "Brier",
                 "M = 15 equal-width bins, edges (lo, hi], confidence 1.0 in the last bin",
                 "temperature scaling", "T = ", "before: accuracy vs confidence", "after",
                 "bin (lo, hi]", "(0.933, 1.000]", "over-confident"):
        assert text in out, text
    # the warning about reporting on the fit's own rows is visible (on stderr)
    assert "warning: the fit and the report use the same rows" in r.stderr
    # the numbers in the table are the definitions' numbers
    x, y = mnist
    doc = as_json(*MNIST)
    t = doc["fit"]["temperature"]
    assert doc["before"]["ece"] == pytest.approx(_ece_plain(softmax(x, axis=1), y), rel=1e-10)
    assert doc["after"]["ece"] == pytest.approx(_ece_plain(softmax(x / t, axis=1), y),
                                                 rel=1e-9)
    assert f"{doc['before']['ece']:.6g}" in out and f"{doc['after']['ece']:.6g}" in out


def test_json_carries_every_number(mnist):
    doc = as_json(*MNIST)
    x, y = mnist
    fit = doc["fit"]
    for k in ("temperature", "beta", "nll_before", "nll_after", "iterations", "passes",
              "gradient_beta", "gradient_temperature", "hessian_beta", "converged"):
        assert k in fit, k
    assert fit["converged"] and abs(fit["gradient_beta"]) < 1e-12
    nll = lambda z: -np.mean(log_softmax(z, axis=1)[np.arange(len(y)), y])  # noqa: E731
    assert fit["nll_before"] == pytest.approx(nll(x), rel=1e-12)
    assert fit["nll_after"] == pytest.approx(nll(x / fit["temperature"]), rel=1e-12)
    for side in ("before", "after"):
        d = doc[side]
        for k in ("accuracy", "nll", "brier", "ece", "mce", "ace", "classwise_ece",
                  "debiased_l2", "over_confidence", "under_confidence", "n_bins", "binning",
                  "norm", "edge_rule"):
            assert k in d, (side, k)
        assert len(d["bins"]["count"]) == 15 and sum(d["bins"]["count"]) == len(y)
        assert len(d["mass_bins"]["count"]) == 15
    assert doc["passes"] <= 8
    assert doc["warnings"]


def test_csv_format(mnist):
    r = ok(*MNIST, "--format", "csv", "--bootstrap", "0")
    lines = r.stdout.splitlines()
    assert lines[0] == "metric,before,after"
    rows = {ln.split(",")[0]: ln.split(",")[1:] for ln in lines[1:]}
    assert float(rows["accuracy"][0]) == pytest.approx((mnist[0].argmax(1) == mnist[1]).mean())
    assert "temperature" in rows
    assert "warning" in r.stderr


def test_split_and_fit_on_report_honestly(tmp_path, mnist):
    x, y = mnist
    doc = as_json(*MNIST, "--split", "0.4", "--seed", "3")
    assert doc["fit"]["fit_on"] == "split"
    assert doc["fit"]["rows"] == 1000 and doc["before"]["rows"] == 1500
    assert not doc["warnings"]
    np.save(tmp_path / "a.npy", x[:1000].astype(np.float32))
    np.save(tmp_path / "ya.npy", y[:1000])
    doc2 = as_json(LOGITS_NPY, "--labels", LABELS_NPY, "--fit-on", tmp_path / "a.npy",
                   "--fit-labels", tmp_path / "ya.npy")
    assert doc2["fit"]["fit_on"] == "separate" and doc2["fit"]["rows"] == 1000
    # the report is on all 2500 rows at the T fitted on the first 1000
    t = doc2["fit"]["temperature"]
    assert doc2["after"]["ece"] == pytest.approx(_ece_plain(softmax(x / t, axis=1), y),
                                                 rel=1e-9)


def test_csv_input_with_class_names(tmp_path):
    p = tmp_path / "z.csv"
    p.write_text("cat,dog,bird\n2,0,1\n0,3,1\n1,1,4\n0.5,0,2\n")
    (tmp_path / "y.csv").write_text("label\ncat\ndog\ncat\nbird\n")
    doc = as_json(p, "--labels", tmp_path / "y.csv")
    assert doc["class_names"] == ["cat", "dog", "bird"]
    assert doc["before"]["accuracy"] == 0.75


def test_label_column(tmp_path):
    p = tmp_path / "z.csv"
    p.write_text("a,b,label\n2,0,a\n0,3,b\n1,1.5,a\n0.5,0,b\n")
    doc = as_json(p, "--label-column", "label")
    assert doc["before"]["rows"] == 4 and doc["before"]["accuracy"] == 0.5


@pytest.mark.parametrize("stream_above", [0, 1 << 22])
def test_output_save_temperature_and_xent(tmp_path, mnist, monkeypatch, stream_above):
    from smx_cli.cli import calibrate as cmd

    monkeypatch.setattr(cmd, "STREAM_OUTPUT_ELEMENTS", stream_above)
    x, y = mnist
    out, tfile = tmp_path / "p.npy", tmp_path / "T.txt"
    r = ok(*MNIST, "-o", out, "--save-temperature", tfile, "--format", "json",
           "--bootstrap", "0")
    doc = json.loads(r.stdout)
    t = float(tfile.read_text())
    assert t == doc["fit"]["temperature"]
    p = np.load(out)
    assert p.dtype == np.float32 and p.shape == x.shape
    assert np.allclose(p, softmax(x / t, axis=1), rtol=1e-6, atol=1e-30)
    ok(*MNIST, "-o", tmp_path / "lp.csv", "--output-kind", "log-probs", "--bootstrap", "0")
    lp = np.loadtxt(tmp_path / "lp.csv", delimiter=",")
    assert np.allclose(lp, log_softmax(x / t, axis=1), rtol=1e-6, atol=1e-6)
    # xent --temperature applies the saved T: its mean loss is the fitted NLL
    xr = CliRunner().invoke(cli, ["xent", LOGITS_NPY, "--labels", LABELS_NPY, "--format",
                                  "json", "--temperature", tfile.read_text().strip()])
    assert xr.exit_code == 0, xr.stderr
    assert json.loads(xr.stdout)["loss"] == pytest.approx(doc["fit"]["nll_after"], rel=1e-12)


def test_xent_temperature_whole_array_path(mnist):
    x, y = mnist
    xr = CliRunner().invoke(cli, ["xent", LOGITS_CSV, "--labels", LABELS_CSV, "--format",
                                  "json", "--temperature", "2.5"])
    assert xr.exit_code == 0, xr.stderr
    want = -np.mean(log_softmax(x / 2.5, axis=1)[np.arange(len(y)), y])
    assert json.loads(xr.stdout)["loss"] == pytest.approx(want, rel=1e-6)  # CSV of float32
    bad = CliRunner().invoke(cli, ["xent", LOGITS_NPY, "--labels", LABELS_NPY,
                                   "--temperature", "0"])
    assert bad.exit_code == 2


def test_plot_svg(tmp_path):
    out = tmp_path / "rel.svg"
    ok(*MNIST, "--plot", out, "--bootstrap", "0")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert out.read_text().count("<rect") > 30


def test_vector_method(mnist):
    doc = as_json(*MNIST, "--method", "vector")
    assert len(doc["fit"]["scale"]) == 10 and len(doc["fit"]["bias"]) == 10
    assert doc["fit"]["nll_after"] < doc["fit"]["nll_before"]


def test_probs_input_warns_and_matches_logits(tmp_path, mnist):
    x, y = mnist
    np.save(tmp_path / "p.npy", softmax(x, axis=1))
    r = ok(tmp_path / "p.npy", "--labels", LABELS_NPY, "--input-kind", "probs",
           "--format", "json", "--bootstrap", "0")
    assert "temperature scaling needs logits" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["fit"]["temperature"] == pytest.approx(as_json(*MNIST)["fit"]["temperature"],
                                                      rel=1e-6)


# ---------------------------------------------------------------- hostile input


def test_probs_given_as_logits(tmp_path, mnist):
    np.save(tmp_path / "p.npy", softmax(mnist[0], axis=1))
    line = fails(1, tmp_path / "p.npy", "--labels", LABELS_NPY)
    assert "look like probabilities" in line and "--input-kind probs" in line


def test_labels_out_of_range(tmp_path):
    np.save(tmp_path / "y.npy", np.r_[np.load(LABELS_NPY)[:-1], 10])
    line = fails(1, LOGITS_NPY, "--labels", tmp_path / "y.npy")
    assert "label 2499 is 10, outside [0, 10)" in line


def test_mismatched_lengths(tmp_path):
    np.save(tmp_path / "y.npy", np.load(LABELS_NPY)[:100])
    assert "100 labels for 2500 rows" in fails(1, LOGITS_NPY, "--labels", tmp_path / "y.npy")


def test_nan_logits_named(tmp_path):
    x = np.load(LOGITS_NPY)
    x[1234, 7] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert "row 1234, class 7 is NaN" in fails(1, tmp_path / "x.npy", "--labels", LABELS_NPY)


@pytest.mark.parametrize("split", [None, "0.5"])
@pytest.mark.parametrize("method", ["temperature", "vector"])
def test_bad_rows_are_named_by_index_and_id(tmp_path, split, method):
    """The row named is the input's own (also when --split keeps only some rows), with its id."""
    x = np.load(LOGITS_NPY)[:400].astype(np.float64)
    y = np.load(LABELS_NPY)[:400]
    x[321, 4] = np.nan
    lines = ["name,label," + ",".join(f"c{j}" for j in range(x.shape[1]))]
    lines += [f"img{i:04d},{y[i]}," + ",".join(repr(float(v)) for v in x[i]) for i in range(len(x))]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    args = [tmp_path / "x.csv", "--label-column", "label", "--id-column", "name",
            "--method", method] + (["--split", split, "--seed", "3"] if split else [])
    err = fails(1, *args)
    assert "row 321 (id 'img0321')" in err, err


def test_empty_input(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((0, 10), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(0, np.int64))
    assert "no data" in fails(1, tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    (tmp_path / "e.csv").write_text("")
    fails(1, tmp_path / "e.csv", "--labels", tmp_path / "y.npy")


def test_truncated_and_lying_npy(tmp_path):
    data = open(LOGITS_NPY, "rb").read()
    (tmp_path / "t.npy").write_bytes(data[:-100])
    assert "t.npy" in fails(1, tmp_path / "t.npy", "--labels", LABELS_NPY)
    huge = data.replace(b"(2500, 10)", b"(2500000000, 10)")
    (tmp_path / "h.npy").write_bytes(huge)
    assert "h.npy" in fails(1, tmp_path / "h.npy", "--labels", LABELS_NPY)


def test_object_npy_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    fails(1, tmp_path / "o.npy", "--labels", LABELS_NPY)


@pytest.mark.parametrize("args,what", [
    (["--bins", "0"], "--bins"),
    (["--split", "1.5"], "--split"),
    (["--split", "0"], "--split"),
    (["--plot", "x.png"], "svg"),
    (["--method", "vector", "--save-temperature", "t.txt"], "--save-temperature"),
    (["--fit-labels", "y.npy"], "--fit-on"),
])
def test_usage_errors(args, what):
    line = fails(2, *MNIST, *args)
    assert what in line


def test_main_usage_error_is_one_line():
    import subprocess
    import sys

    root = os.path.dirname(SAMPLES)
    r = subprocess.run([sys.executable, "-m", "smx_cli", "calibrate", *MNIST, "--split", "2"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--split" in r.stderr


def test_no_labels_is_usage_error():
    assert "--labels" in fails(2, LOGITS_NPY)


def test_output_onto_input_refused(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.load(LOGITS_NPY))
    before = x.read_bytes()
    assert "refusing to overwrite" in fails(1, x, "--labels", LABELS_NPY, "-o", x)
    assert x.read_bytes() == before


def test_split_leaving_nothing(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.save(tmp_path / "y.npy", np.array([0, 0]))
    assert "leaves" in fails(1, tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                             "--split", "0.1")


@pytest.mark.parametrize("stream_above", [0, 1 << 22])
def test_output_with_label_column_npy_holds_only_classes(tmp_path, mnist, monkeypatch,
                                                         stream_above):
    # the label column must not reach -o, also where NPY output is streamed
    from smx_cli.cli import calibrate as cmd

    monkeypatch.setattr(cmd, "STREAM_OUTPUT_ELEMENTS", stream_above)
    x, y = mnist
    both = np.column_stack([x, y]).astype(np.float64)
    np.save(tmp_path / "xy.npy", both)
    out = tmp_path / "p.npy"
    r = ok(tmp_path / "xy.npy", "--label-column", "10", "-o", out, "--format", "json",
           "--bootstrap", "0")
    t = json.loads(r.stdout)["fit"]["temperature"]
    p = np.load(out)
    assert p.shape == x.shape
    assert np.allclose(p, softmax(x / t, axis=1), rtol=1e-12, atol=1e-300)


# ----------------------------------------------------------------------------
# columns: --id-column, --columns, --drop-columns (issue 14, point 6)


def _scored(n=300, c=4, seed=5):
    """Over-confident logits and labels drawn from a softer model (so T > 1 is fitted)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 3
    p = softmax(z / 2.5, axis=1)
    y = np.array([rng.choice(c, p=row) for row in p])
    return z, y


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _same_report(a, b):
    for doc in (a, b):
        doc.pop("source", None)
        doc["fit"].pop("source", None)
    assert a == b


@pytest.mark.parametrize("kind", ["text", "number"])
def test_id_column_is_left_out_of_the_fit(tmp_path, kind):
    """A string id column used to be fatal and a numeric one a silent extra class: with
    --id-column both are left out, and the report is that of the logits alone."""
    z, y = _scored()
    names = ["a", "b", "c", "d"]
    plain = _csv(tmp_path / "plain.csv", ["y", *names],
                 [[str(t), *map(repr, r)] for t, r in zip(y, z.tolist())])
    ids = [f'"img {i}, crop"' if kind == "text" else str(1000 + 7 * i) for i in range(len(y))]
    named = _csv(tmp_path / "named.csv", ["y", "id", *names],
                 [[str(t), i, *map(repr, r)] for t, i, r in zip(y, ids, z.tolist())])
    want = as_json(plain, "--label-column", "y")
    got = as_json(named, "--label-column", "y", "--id-column", "id")
    assert got["before"]["classes"] == 4 and got["fit"]["temperature"] > 1.5
    _same_report(got, want)
    # labels from their own file: the same
    (tmp_path / "y.txt").write_text("".join(f"{t}\n" for t in y))
    got = as_json(named, "--labels", tmp_path / "y.txt", "--drop-columns", "y",
                  "--id-column", "1")
    _same_report(got, want)
    if kind == "number":  # without --id-column the ids are a fifth class: a different fit
        other = as_json(named, "--label-column", "y")
        assert other["before"]["classes"] == 5 and other["fit"] != want["fit"]
    else:
        assert "'img 0, crop' is not a number" in fails(1, named, "--label-column", "y")


def test_ids_reach_every_output_file(tmp_path):
    z, y = _scored(n=40, c=3)
    ids = ["Smith, J", 'say "hi"', "", "run #3"] + [f"r{i}" for i in range(4, 40)]
    quoted = ['"' + s.replace('"', '""') + '"' for s in ids]
    f = _csv(tmp_path / "s.csv", ["name", "label", "x", "y", "z"],
             [[q, str(t), *map(repr, r)] for q, t, r in zip(quoted, y, z.tolist())])
    args = [f, "--label-column", "label", "--id-column", "name", "--bootstrap", "0"]
    r = ok(*args, "-o", tmp_path / "p.csv", "--format", "json")
    t = json.loads(r.stdout)["fit"]["temperature"]
    want = softmax(z / t, axis=1)
    import csv as csvmod
    rows = list(csvmod.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["id", "x", "y", "z"] and [row[0] for row in rows[1:]] == ids
    assert np.allclose([[float(v) for v in row[1:]] for row in rows[1:]], want, rtol=1e-13)
    ok(*args, "-o", tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as npz:
        assert npz["ids"].tolist() == ids and npz["classes"].tolist() == ["x", "y", "z"]
        assert np.allclose(npz["values"], want, rtol=1e-13)
    ok(*args, "-o", tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["ids"] == ids and doc["classes"] == ["x", "y", "z"]
    r = ok(*args, "-o", tmp_path / "p.tsv", "--output-kind", "log-probs")
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0] == "id\tx\ty\tz" and lines[1].split("\t")[0] == "Smith, J"
    assert np.allclose([float(v) for v in lines[1].split("\t")[1:]],
                       log_softmax(z[0] / t), rtol=1e-13)
    # NPY holds numbers only: said on stderr, the values still written
    r = ok(*args, "-o", tmp_path / "p.npy")
    assert "NPY holds numbers only" in r.stderr and np.load(tmp_path / "p.npy").shape == (40, 3)


def test_ids_of_an_npy_file_and_columns(tmp_path):
    """A numeric id column of an NPY file (no streaming then), and --columns choosing
    and ordering the logits: the fit sees only those columns."""
    z, y = _scored(n=50, c=3)
    ids = np.arange(50) * 1000003.0 + 1234567891
    np.save(tmp_path / "a.npy", np.column_stack([ids, z, y]))
    keep = (y != 1)
    np.save(tmp_path / "zk.npy", z[keep][:, [2, 0]])
    np.save(tmp_path / "yk.npy", np.where(y[keep] == 2, 0, 1))
    got = as_json(tmp_path / "a.npy", "--id-column", "0", "--label-column", "4")
    np.save(tmp_path / "z3.npy", z)
    np.save(tmp_path / "y3.npy", y)
    want = as_json(tmp_path / "z3.npy", "--labels", tmp_path / "y3.npy")
    _same_report(got, want)
    ok(tmp_path / "a.npy", "--id-column", "0", "--label-column", "4", "-o",
       tmp_path / "p.csv", "--bootstrap", "0")
    first = (tmp_path / "p.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in first[:2]] == ["1234567891", "1235567894"]
    # --columns 3,1 on rows whose labels are classes 2 and 0 only
    a = np.column_stack([ids, z, np.where(y == 2, 0, 1)])[keep]
    np.save(tmp_path / "b.npy", a)
    got = as_json(tmp_path / "b.npy", "--id-column", "0", "--label-column", "4",
                  "--columns", "3,1")
    _same_report(got, as_json(tmp_path / "zk.npy", "--labels", tmp_path / "yk.npy"))


HOSTILE = [
    ("id,a,a,b\nx,1,2,0\n", ["--id-column", "id", "--columns", "a,b"],
     "the header has 2 columns of that name (columns 1, 2)"),
    ("id,id,a,b\nx,y,1,0\n", ["--id-column", "id"], "2 columns of that name"),
    ("name,a,b\nx,1,0\n", ["--id-column", "id"], "no id column 'id' (columns: name, a, b)"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--label-column", "id"],
     "--id-column and --label-column both name column 0 ('id')"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--columns", "id,a"],
     "--columns includes column 0 ('id'), which --id-column takes"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--drop-columns", "a,b"],
     "no logit columns left"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--columns", "9"], "out of range for 3 columns"),
    ('id,a,b\n"Smith, J",1,0\ny,oops,0\n', ["--id-column", "id"],
     "line 3, column 2: 'oops' is not a number"),
    ("", ["--id-column", "id"], "no data"),
    ("# only a comment\n", ["--id-column", "0"], "no data"),
    ("id,a,b\n", ["--id-column", "id"], "only a header row"),
]


@pytest.mark.parametrize("text, args, why", HOSTILE)
def test_hostile_columns(tmp_path, text, args, why):
    p = tmp_path / "h.csv"
    p.write_text(text)
    (tmp_path / "y.txt").write_text("0\n0\n")
    out = tmp_path / "p.csv"
    labels = [] if "--label-column" in args else ["--labels", tmp_path / "y.txt"]
    line = fails(1, p, *labels, *args, "-o", out)
    assert why in line, line
    assert not out.exists()  # no partial output


def test_column_usage_errors(tmp_path):
    p = _csv(tmp_path / "s.csv", ["id", "y", "a", "b"], [["x", "0", "1", "0"]])
    assert "not both" in fails(1, p, "--label-column", "y", "--columns", "a",
                               "--drop-columns", "b")
    assert "empty entry" in fails(2, p, "--label-column", "y", "--columns", "a,,b")
    assert "drop --fit-labels" in fails(2, p, "--label-column", "y", "--fit-on", p,
                                        "--fit-labels", p)


def test_fit_on_takes_the_same_columns_out(tmp_path):
    z, y = _scored(n=200, c=3, seed=8)
    rows = [[f"id{i}", str(t), *map(repr, r)] for i, (t, r) in enumerate(zip(y, z.tolist()))]
    a = _csv(tmp_path / "a.csv", ["id", "y", "p", "q", "r"], rows[:100])
    b = _csv(tmp_path / "b.csv", ["id", "y", "p", "q", "r"], rows[100:])
    got = as_json(a, "--label-column", "y", "--id-column", "id", "--fit-on", b)
    np.save(tmp_path / "za.npy", z[:100])
    np.save(tmp_path / "ya.npy", y[:100])
    np.save(tmp_path / "zb.npy", z[100:])
    np.save(tmp_path / "yb.npy", y[100:])
    want = as_json(tmp_path / "za.npy", "--labels", tmp_path / "ya.npy", "--fit-on",
                   tmp_path / "zb.npy", "--fit-labels", tmp_path / "yb.npy")
    assert got["fit"]["temperature"] == pytest.approx(want["fit"]["temperature"], rel=1e-12)
    for k in ("nll", "ece", "accuracy", "brier", "rows"):
        assert got["after"][k] == pytest.approx(want["after"][k], rel=1e-12), k
