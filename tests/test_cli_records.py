"""xent's machine-readable output and choosing columns (issue 14, points 6 and 7).

Per-sample results are records with named fields, each in its own type:
integers stay integers, flags are booleans, floats are exact; NPZ holds one
array per field and NPY one structured array, both read without pickle. Id,
label and logit columns are chosen by name or index, from hostile files too.
"""
from __future__ import annotations

import csv
import io
import json
import os
import types

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.cli import options as options_mod
from smx_cli.core.xent import evaluate

LOGITS_NPY = os.path.join(SAMPLES, "mnist_lenet_logits.npy")
LABELS_NPY = os.path.join(SAMPLES, "mnist_lenet_labels.npy")

INT_FIELDS = ("row", "label", "predicted")
BOOL_FIELDS = ("correct", "ignored", "top5")
FLOAT_FIELDS = ("p_true", "loss", "margin", "entropy")


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.exit_code == 0, (args, r.stderr, r.output)
    return r


@pytest.fixture
def case(tmp_path):
    """Logits with a NaN row, an ignored sample and a confidently wrong one, and the
    library's result for them (what every output must carry, field by field)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 7)) * 4
    x[2, 3] = np.nan
    x[5] = [0, 0, 0, 0, 0, 0, 800]
    y = np.array([0, 1, 2, -100, 4, 0, 6, 1, 3])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y, evaluate(x, y, reduction="none")


def _same_float(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _check_fields(get, res, n):
    """``get(name)`` -> the column as written; compared with the library's result."""
    assert np.array_equal(get("row"), np.arange(n))
    assert np.array_equal(get("label"), res.true_class)            # -1: ignored
    pred = np.asarray(get("predicted"))
    assert pred[2] == -1                                            # a NaN row: undefined
    keep = np.arange(n) != 2
    assert np.array_equal(pred[keep], res.predicted[keep])
    for name in BOOL_FIELDS:
        assert np.array_equal(get(name), getattr(res, name)), name
    for name in ("p_true", "loss", "margin"):
        assert _same_float(get(name), getattr(res, name)), name
    ent = np.asarray(get("entropy"), dtype=np.float64)
    assert np.isnan(ent[2]) and _same_float(ent[keep], res.entropy[keep])


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_text_records_keep_each_fields_type(case, fmt):
    d, x, y, res = case
    r = ok("xent", d / "x.npy", "--labels", d / "y.npy", "--reduction", "none",
           "--format", fmt)
    rows = list(csv.reader(io.StringIO(r.stdout), delimiter="," if fmt == "csv" else "\t"))
    head, body = rows[0], rows[1:]
    assert head == ["row", "label", "predicted", "p_true", "loss", "margin", "correct",
                    "ignored", "top5", "entropy"]
    cols = {name: [row[j] for row in body] for j, name in enumerate(head)}
    for name in INT_FIELDS:   # "3", never "3.0"
        assert all(c.lstrip("-").isdigit() for c in cols[name]), (name, cols[name])
    for name in BOOL_FIELDS:
        assert set(cols[name]) <= {"true", "false"}, name
    _check_fields(lambda name: (np.array([int(c) for c in cols[name]]) if name in INT_FIELDS
                                else np.array([c == "true" for c in cols[name]])
                                if name in BOOL_FIELDS
                                else np.array([float(c) for c in cols[name]])), res, len(y))


def test_text_records_read_back_typed_by_polars(case):
    pl = pytest.importorskip("polars")
    d, x, y, res = case
    out = d / "l.csv"
    ok("xent", d / "x.npy", "--labels", d / "y.npy", "-o", out)
    df = pl.read_csv(out, schema_overrides={name: pl.Float64 for name in FLOAT_FIELDS})
    assert df["label"].dtype == pl.Int64 and df["predicted"].dtype == pl.Int64  # inferred
    assert df["correct"].dtype == pl.Boolean and df["ignored"].dtype == pl.Boolean
    _check_fields(lambda name: df[name].to_numpy(), res, len(y))


def test_json_per_sample_is_a_list_of_records(case):
    d, x, y, res = case
    r = ok("xent", d / "x.npy", "--labels", d / "y.npy", "--format", "json")
    doc = json.loads(r.stdout)
    recs = doc["per_sample"]
    assert isinstance(recs, list) and all(isinstance(rec, dict) for rec in recs)
    assert all(list(rec) == doc["columns"] for rec in recs)
    for name in INT_FIELDS:
        assert all(type(rec[name]) is int for rec in recs), name
    for name in BOOL_FIELDS:
        assert all(type(rec[name]) is bool for rec in recs), name
    assert recs[2]["loss"] is None and recs[3]["p_true"] is None   # NaN: null

    def get(name):
        return np.array([np.nan if rec[name] is None else rec[name] for rec in recs])
    _check_fields(get, res, len(y))
    assert doc["nonfinite_loss_rows"] == [2]


def test_npz_has_one_array_per_field_with_its_dtype(case):
    d, x, y, res = case
    ok("xent", d / "x.npy", "--labels", d / "y.npy", "-o", d / "l.npz")
    with np.load(d / "l.npz", allow_pickle=False) as z:
        assert z.files == ["row", "label", "predicted", "p_true", "loss", "margin", "correct",
                           "ignored", "top5", "entropy"]
        for name in INT_FIELDS:
            assert z[name].dtype == np.int64, name
        for name in BOOL_FIELDS:
            assert z[name].dtype == np.bool_, name
        for name in FLOAT_FIELDS:
            assert z[name].dtype == np.float64, name
        _check_fields(lambda name: z[name], res, len(y))


def test_npy_is_one_structured_array(case):
    d, x, y, res = case
    ok("xent", d / "x.npy", "--labels", d / "y.npy", "-o", d / "l.npy")
    a = np.load(d / "l.npy", allow_pickle=False)
    assert a.shape == (len(y),) and a.dtype.names[:3] == ("row", "label", "predicted")
    assert a.dtype["label"] == np.int64 and a.dtype["correct"] == np.bool_
    _check_fields(lambda name: a[name], res, len(y))


def test_npz_and_npy_to_stdout(case, monkeypatch):
    d, x, y, res = case
    r = CliRunner().invoke(cli, ["xent", str(d / "x.npy"), "--labels", str(d / "y.npy"),
                                 "--format", "npz"])
    assert r.exit_code == 0
    with np.load(io.BytesIO(r.stdout_bytes), allow_pickle=False) as z:
        assert np.array_equal(z["label"], res.true_class)
    # binary to a terminal is a usage error (exit 2), as for softmax
    tty = types.SimpleNamespace(isatty=lambda: True)
    monkeypatch.setattr(options_mod, "sys", types.SimpleNamespace(stdin=tty, stdout=tty))
    for fmt in ("npy", "npz"):
        r = run("xent", d / "x.npy", "--labels", d / "y.npy", "--format", fmt)
        assert r.exit_code == 2 and "binary" in r.stderr, fmt


@pytest.mark.parametrize("name, fmt, why", [
    ("l.npz", "csv", "npz by its extension but --format says csv"),
    ("l.bin", None, "use .npy, .npz, .csv, .tsv, .json"),
    ("losses", None, "from no extension"),
])
def test_xent_extension_decides(case, name, fmt, why):
    d, x, y, res = case
    r = run("xent", d / "x.npy", "--labels", d / "y.npy", "-o", d / name,
            *(["--format", fmt] if fmt else []))
    assert r.exit_code == 2 and why in " ".join(r.stderr.split())
    assert not (d / name).exists()


def test_outputs_are_atomic_all_or_none(case):
    d, x, y, res = case
    out = d / "l.npz"
    out.write_bytes(b"old")
    np.save(d / "bad.npy", np.array([0, 1, 2, 3, 4, 5, 6, 1, 99]))   # a label out of range
    r = run("xent", d / "x.npy", "--labels", d / "bad.npy", "-o", out)
    assert r.exit_code == 1 and "label 8 is 99" in r.stderr
    assert out.read_bytes() == b"old"
    assert not [p for p in os.listdir(d) if p.endswith(".part")]


def test_lm_per_token_records(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 4, 5))
    ids = np.array([[1, 2, 3, 4], [0, 0, 1, 2]])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", ids)
    ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--shift-labels",
       "-o", tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        assert z["seq"].dtype == np.int64 and z["correct"].dtype == np.bool_
        assert z["seq"].tolist() == [0, 0, 0, 1, 1, 1] and z["pos"].tolist() == [0, 1, 2] * 2
        assert z["label"].tolist() == [2, 3, 4, 0, 1, 2]
    doc = json.loads(ok("xent", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                        "--shift-labels", "--format", "json").stdout)
    assert type(doc["per_token"][0]["pos"]) is int


# ----------------------------------------------------------------------------
# columns: ids, labels and the logit columns


HOSTILE = ('name,y,a,b,c\n'
           '"Smith, J",2,1,2,3\n'
           '"say ""hi""",0,3,1,nan\n'
           ',1,0,0,0\n'
           'emu,2,5,1,0\n')


@pytest.fixture
def named(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(HOSTILE)
    return p


def test_ids_with_quoted_commas_reach_every_output(named, tmp_path):
    ids = ["Smith, J", 'say "hi"', "", "emu"]
    r = ok("xent", named, "--label-column", "y", "--id-column", "name", "--format", "csv")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0][:3] == ["row", "id", "label"]
    assert [row[1] for row in rows[1:]] == ids and [row[2] for row in rows[1:]] == \
        ["2", "0", "1", "2"]
    doc = json.loads(ok("xent", named, "--label-column", "y", "--id-column", "name",
                        "--format", "json").stdout)
    assert [rec["id"] for rec in doc["per_sample"]] == ids
    ok("xent", named, "--label-column", "y", "--id-column", "name", "-o", tmp_path / "l.npz")
    with np.load(tmp_path / "l.npz", allow_pickle=False) as z:
        assert z["id"].tolist() == ids and z["label"].tolist() == [2, 0, 1, 2]
    # the loss of the id'd rows is that of the logit columns alone
    want = evaluate(np.array([[1, 2, 3], [3, 1, np.nan], [0, 0, 0], [5, 1, 0.]]),
                    [2, 0, 1, 2], reduction="none")
    assert _same_float([rec["loss"] if rec["loss"] is not None else np.nan
                        for rec in doc["per_sample"]], want.loss)


def test_ids_reach_the_gradient_file(named, tmp_path):
    ok("xent", named, "--label-column", "y", "--id-column", "name", "--grad-out",
       tmp_path / "g.csv")
    rows = list(csv.reader(open(tmp_path / "g.csv")))
    assert rows[0] == ["id", "a", "b", "c"] and [r[0] for r in rows[1:]] == \
        ["Smith, J", 'say "hi"', "", "emu"]


def test_ids_in_worst_and_in_the_panel(named, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    r = ok("xent", named, "--label-column", "y", "--id-column", "name", "--worst", "2")
    flat = " ".join(r.stdout.split())
    lines = r.stdout.splitlines()
    rule = next(i for i, ln in enumerate(lines) if ln.strip().startswith("───"))
    assert lines[rule + 1].split()[:3] == ["say", '"hi"', "a"]     # the NaN loss ranks first
    assert lines[rule + 2].split()[0] == "emu"
    assert 'non-finite loss 1 sample' in flat and 'row say "hi"' in flat
    # an empty id is shown as "", not as nothing
    r = ok("xent", named, "--label-column", "y", "--id-column", "name")
    assert '""' in r.stdout


def test_columns_and_drop_columns_choose_the_logits(named):
    base = ok("xent", named, "--label-column", "y", "--id-column", "name",
              "--reduction", "none", "--format", "json").stdout
    for extra in (["--columns", "a,b,c"], ["--columns", "2:5"], ["--columns", "2:"]):
        r = ok("xent", named, "--label-column", "y", "--id-column", "name",
               "--reduction", "none", "--format", "json", *extra)
        assert json.loads(r.stdout)["per_sample"] == json.loads(base)["per_sample"], extra
    # a subset, in the order given: the classes are c, a (label 1 is a)
    r = ok("xent", named, "--label-column", "y", "--id-column", "name", "--columns", "c,a",
           "--format", "json", "--ignore-index", "2")
    doc = json.loads(r.stdout)
    assert doc["class_names"] == ["c", "a"] and doc["classes"] == 2
    # softmax takes them too, with --label-column and --id-column together
    r = ok("softmax", named, "--label-column", "y", "--id-column", "name", "--drop-columns",
           "b", "--format", "csv")
    assert r.stdout.splitlines()[0] == "id,a,c"
    assert r.stdout.splitlines()[1] == '"Smith, J",0.11920292202211756,0.8807970779778824'


def test_softmax_ids_in_npz_json_csv(named, tmp_path):
    ok("softmax", named, "--label-column", "y", "--id-column", "name", "-o", tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        assert z["ids"].tolist() == ["Smith, J", 'say "hi"', "", "emu"]
        assert z["classes"].tolist() == ["a", "b", "c"] and z["values"].shape == (4, 3)
    doc = json.loads(ok("softmax", named, "--label-column", "y", "--id-column", "name",
                        "--format", "json").stdout)
    assert doc["ids"][0] == "Smith, J"


@pytest.mark.parametrize("text, args, why", [
    # duplicate column names: a name that is ambiguous is refused, naming the columns
    ("id,a,a,b\nx,1,2,3\n", ["--id-column", "id", "--columns", "a,b"],
     "the header has 2 columns of that name (columns 1, 2)"),
    ("id,id,a\nx,y,1\n", ["--id-column", "id"], "2 columns of that name"),
    # the id column missing
    ("name,a,b\nx,1,2\n", ["--id-column", "id"], "no id column 'id' (columns: name, a, b)"),
    # the id column also listed as a logit
    ("id,a,b\nx,1,2\n", ["--id-column", "id", "--columns", "id,a,b"],
     "--columns includes column 0 ('id'), which --id-column takes"),
    ("id,a,b\nx,1,2\n", ["--id-column", "id", "--drop-columns", "id"],
     "--drop-columns names column 0 ('id'), which --id-column takes"),
    ("id,a,b\nx,1,2\n", ["--id-column", "id", "--columns", "a,a"], "lists column 1 ('a') twice"),
    ("id,a,b\nx,1,2\n", ["--id-column", "id", "--columns", "7"], "out of range for 3 columns"),
    ("id,a,b\nx,1,2\n", ["--id-column", "id", "--drop-columns", "a,b"], "no logit columns left"),
    # a '#' outside quotes starts a comment; inside quotes it is part of the id
    ('id,a,b\n"run #3",1,2\nx,1 # a comment, then a ragged row\n', ["--id-column", "id"],
     "line 3 has 2 values, expected 3"),
    # a string column left among the logits names its line and column
    ("id,a,b\nx,1,2\ny,oops,3\n", ["--id-column", "id"], "line 3, column 2: 'oops' is not"),
    ("id,a,b\nx,1,2\ny,3\n", ["--id-column", "id"], "line 3 has 2 values, expected 3"),
    ("id,a,b\n", ["--id-column", "id"], "only a header row"),
    # a quoted id with a comma, but no --id-column: the split row names the fix
    ('name,a,b\n"Smith, J",1,2\n', [], "line 2 has 4 values, expected 3 (the header's count); "
     "a quoted field holds the delimiter: name that column with --id-column"),
])
@pytest.mark.parametrize("command", ["softmax", "xent"])
def test_hostile_columns(tmp_path, text, args, why, command):
    p = tmp_path / "h.csv"
    p.write_text(text)
    extra = ["--labels", "-"] if command == "xent" else []
    r = run(command, p, *args, *extra, input="0\n0\n")
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert why in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_hash_inside_quotes_is_part_of_the_id(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text('id,a,b  # the header\n"run #3",1,2\n# a comment line\nx,0,0\n')
    r = ok("softmax", p, "--id-column", "id", "--format", "csv")
    assert r.stdout.splitlines() == ["id,a,b", "run #3,0.2689414213699951,0.7310585786300049",
                                     "x,0.5,0.5"]


def test_column_option_usage_errors(named):
    r = run("xent", named, "--label-column", "y", "--columns", "a", "--drop-columns", "b")
    assert r.exit_code == 1 and "not both" in r.stderr
    r = run("softmax", named, "--columns", "a,,b")
    assert r.exit_code == 2 and "empty entry" in r.stderr
    r = run("xent", named, "--labels", "-", "--id-column", "name", "--shift-labels")
    assert r.exit_code == 2


def test_columns_of_an_npy_file_and_of_stdin(tmp_path):
    a = np.array([[1234567891, 0.0, 1.0, 2.0], [7, 2.0, 1.0, 0.0]])
    np.save(tmp_path / "a.npy", a)
    r = ok("xent", tmp_path / "a.npy", "--id-column", "0", "--labels", "-", "--format", "csv",
           input="2\n0\n")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert [row[1] for row in rows[1:]] == ["1234567891", "7"]     # an integer id stays exact
    assert [row[3] for row in rows[1:]] == ["2", "0"]
    r = ok("softmax", "--id-column", "0", "--columns", "1,2", "--format", "csv",
           input='"a,b",1,2,9\nc,0,0,9\n')
    assert r.stdout.splitlines() == ['"a,b",0.2689414213699951,0.7310585786300049',
                                     "c,0.5,0.5"]


def test_record_writers_read_back_exactly():
    """JSON and CSV cells read back to the very values (floats across the whole range,
    NaN/inf, ints, flags, text with quotes, commas and backslashes)."""
    from smx_cli.io.write import records_json, records_text

    rng = np.random.default_rng(9)
    n = 2000
    f = {"row": np.arange(n), "p": rng.random(n) * 10.0 ** rng.integers(-320, 300, n),
         "loss": np.r_[np.nan, np.inf, -np.inf, -0.0, 5e-324, rng.standard_normal(n - 5)],
         "ok": rng.random(n) > 0.5, "id": np.array([f'r{i}, "q" \\ é' for i in range(n)])}
    doc = json.loads(records_json(f))
    assert [r["p"] for r in doc] == f["p"].tolist()
    assert doc[0]["loss"] is None and doc[1]["loss"] == "inf" and doc[2]["loss"] == "-inf"
    assert [r["loss"] for r in doc[3:]] == f["loss"][3:].tolist()
    assert [r["id"] for r in doc] == f["id"].tolist() and [r["ok"] for r in doc] == \
        f["ok"].tolist()
    rows = list(csv.reader(io.StringIO(records_text(f))))
    assert rows[0] == list(f)
    assert [float(r[1]) for r in rows[1:]] == f["p"].tolist()
    assert _same_float([float(r[2]) for r in rows[1:]], f["loss"])
    assert [r[4] for r in rows[1:]] == f["id"].tolist()


def test_softmax_npy_output_says_it_drops_the_ids(tmp_path):
    src = tmp_path / "ids.csv"
    src.write_text('name,a,b\nx,1,2\n"y, z",3,1\n')
    for ext, noted in ((".npy", True), (".npz", False), (".csv", False)):
        out = tmp_path / f"p{ext}"
        r = CliRunner().invoke(cli, ["softmax", str(src), "--id-column", "name", "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert ("NPY holds numbers only" in r.stderr) is noted, (ext, r.stderr)
        assert r.stdout == ""
    np.testing.assert_array_equal(np.load(tmp_path / "p.npz", allow_pickle=False)["ids"],
                                  ["x", "y, z"])
