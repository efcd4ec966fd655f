"""``smx compare-stability`` end to end: what the user sees, and the JSON scripts read."""
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.analysis.compare import SEED_ROWS, compare_stability

MNIST = os.path.join(SAMPLES, "mnist_lenet_logits.npy")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    """Every column of the comparison fits (the narrow tests set COLUMNS themselves)."""
    monkeypatch.setenv("COLUMNS", "130")


def run(*args, input=None):
    return CliRunner().invoke(cli, ["compare-stability", *args], input=input,
                              catch_exceptions=False)


def as_json(r):
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def result(doc, variant, dtype):
    return next(x for x in doc["results"] if x["variant"] == variant and x["dtype"] == dtype)


def table_rows(out):
    """The comparison table's body as {(dtype, variant): [cells...]}."""
    rows, dtype = {}, None
    for line in out.splitlines():
        if line.startswith("smx: "):      # the caption: the table is over
            break
        cells = line.split()
        if not cells:
            continue
        if cells[0] in ("float16", "bfloat16", "float32", "float64") and len(cells) >= 13:
            dtype, cells = cells[0], cells[1:]
        if dtype and len(cells) == 12 and cells[0] in ("naive", "stable", "log", "online",
                                                          "lse", "smx"):
            rows[(dtype, cells[0])] = cells[1:]
    return rows


def test_no_file_tells_the_seed_story():
    r = run()
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "the seed examples [1,2,3] [1,2,5] [1000,2000,3000] [-1000,1,10000]" in out
    rows = table_rows(out)
    assert len(rows) == 24
    for dt in ("float16", "bfloat16", "float32", "float64"):
        assert rows[(dt, "naive")][-1] == "broken"
        assert rows[(dt, "naive")][:4] == ["2", "0", "4", "2"]
        assert rows[(dt, "stable")][-1] == "ok" and rows[(dt, "smx")][-1] == "ok"
    # the worst rows show the NaN, and why
    assert "worst row of each broken variant" in out
    assert out.count("[nan, nan, nan]") == 4
    assert "[1000, 2000, 3008]" in out                  # 3000 rounded to bfloat16
    assert "11.09 in float16" in out and "88.5 after rounding" in out
    assert "709.78 in float64" in out


def test_table_numbers_match_json(monkeypatch):
    monkeypatch.setenv("COLUMNS", "130")  # every column fits
    table = table_rows(run(MNIST, "--rows", "400").stdout)
    doc = as_json(run(MNIST, "--rows", "400", "--format", "json"))
    assert doc["rows"] == 400 and len(doc["results"]) == 24
    for res in doc["results"]:
        cells = table[(res["dtype"], res["variant"])]
        assert [int(c.replace(",", "")) for c in cells[:4]] == [
            res["overflow_rows"], res["underflow"], res["nan"], res["failed_rows"]]
        for cell, key in zip(cells[4:10], ["max_ulp", "max_bound_ratio", "median_ulp",
                                           "max_row_error_u", "max_sum_error",
                                           "max_logp_error"]):
            assert float(cell) == pytest.approx(res[key], rel=0.06, abs=0), key
        assert cells[10] == res["verdict"]


def test_json_matches_the_library():
    doc = as_json(run("--format", "json"))
    lib = compare_stability(SEED_ROWS).to_dict()
    assert doc["command"] == "compare-stability"
    assert doc["results"] == json.loads(json.dumps(_plain(lib["results"])))
    assert doc["thresholds"]["float16"]["exp_overflow_in_format"] == 11.0859375
    w = result(doc, "naive", "float16")["worst"]
    assert w["index"] == 2 and w["output"] == ["nan", "nan", "nan"]


def _plain(obj):
    if isinstance(obj, float) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def test_mnist_reproduces_the_paper_through_the_cli():
    doc = as_json(run(MNIST, "--format", "json", "--dtypes", "float16,bfloat16",
                      "--variants", "naive,stable,lse"))
    assert result(doc, "naive", "float16")["overflow_rows"] == 475
    assert result(doc, "stable", "float16")["overflow_rows"] == 0
    assert result(doc, "naive", "bfloat16")["overflow_rows"] == 0
    assert result(doc, "stable", "bfloat16")["overflow_rows"] == 0
    st = result(doc, "stable", "float16")["max_row_error_u"]
    ls = result(doc, "lse", "float16")["max_row_error_u"]
    assert st < 2.5 < 7 < ls


def test_variants_and_dtypes_select_rows():
    doc = as_json(run("--variants", "naive, lse", "--dtypes", "float32", "--format", "json"))
    assert [(x["variant"], x["dtype"]) for x in doc["results"]] == [("naive", "float32"),
                                                                    ("lse", "float32")]
    rows = table_rows(run("--variants", "stable", "--dtypes", "bfloat16,float16").stdout)
    assert set(rows) == {("bfloat16", "stable"), ("float16", "stable")}


def test_rows_limits_the_rows_checked():
    doc = as_json(run("--rows", "2", "--format", "json"))
    assert doc["rows"] == 2
    naive = result(doc, "naive", "float16")
    assert naive["rows"] == 2 and naive["overflow_rows"] == 0 and naive["verdict"] != "broken"


def test_temperature_reaches_the_computation():
    doc = as_json(run("--temperature", "1000", "--format", "json"))
    assert doc["temperature"] == 1000
    # [1000,2000,3000]/1000 = [1,2,3]: nothing overflows any more
    assert all(x["overflow_rows"] == 0 for x in doc["results"])
    r = run("-t", "1000")
    assert "T=1000" in r.stdout


def test_file_input_options(tmp_path):
    p = tmp_path / "logits.tsv"
    p.write_text("a\tb\tc\n0\t20\t1\n1\t2\t3\n")
    doc = as_json(run(str(p), "--delimiter", "tab", "--header", "--format", "json",
                      "--dtypes", "float16", "--variants", "naive"))
    assert doc["classes"] == 3 and result(doc, "naive", "float16")["overflow_rows"] == 1
    # --axis 0: the columns are the rows
    doc = as_json(run(str(p), "--axis", "0", "--format", "json", "--dtypes", "float16",
                      "--variants", "naive"))
    assert doc["rows"] == 3 and doc["classes"] == 2
    assert result(doc, "naive", "float16")["overflow_rows"] == 1


def test_stdin():
    doc = as_json(run("-", "--format", "json", "--dtypes", "float16", "--variants", "naive",
                      input="0,12\n0,1\n"))
    assert result(doc, "naive", "float16")["overflow_rows"] == 1


def test_output_file_holds_the_same_json(tmp_path):
    out = tmp_path / "report.json"
    r = run("-o", str(out))
    assert r.exit_code == 0 and "wrote" in r.stderr
    assert json.loads(out.read_text()) == as_json(run("--format", "json"))


def test_sweep_table_and_chart():
    r = run("--sweep", "--dtypes", "float16,float64")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "standard-normal sample (seed 0)" in out
    assert re.search(r"naive\s+10 overflow\s+1e3 overflow", out)
    assert re.search(r"stable\s+never \(<= 1e4\)\s+never \(<= 1e6\)", out)
    assert re.search(r"exp overflows above\s+11.09\s+709.78", out)
    assert re.search(r"naive float16 +█+✗ +breaks at 10", out)
    assert "▶ never" in out


def test_sweep_json_on_a_file(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("0,2\n")
    doc = as_json(run(str(p), "--sweep", "--format", "json", "--max-scale", "1e4"))
    sw = doc["sweep"]
    brk = {(e["variant"], e["dtype"]): e["break_scale"] for e in sw["entries"]}
    assert brk[("naive", "float16")] == 10 and brk[("naive", "float64")] == 1000
    assert brk[("stable", "float16")] is None
    assert sw["scales"][-1] == 1e4


def test_sweep_seed_changes_the_sample():
    a = as_json(run("--sweep", "--format", "json", "--seed", "1", "--variants", "naive"))
    b = as_json(run("--sweep", "--format", "json", "--seed", "2", "--variants", "naive"))
    assert a["sweep"]["max_logit"] != b["sweep"]["max_logit"]


@pytest.mark.parametrize("args,msg", [
    (["/no/such/file.csv"], "no such file"),
    (["BAD"], None),
])
def test_bad_input_is_a_one_line_error(tmp_path, args, msg):
    if args == ["BAD"]:
        p = tmp_path / "bad.csv"
        p.write_text("1,2,3\n4,x,6\n")
        args = [str(p)]
    r = run(*args)
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:")
    if msg:
        assert msg in lines[0]


def test_empty_input_is_an_error(tmp_path):
    p = tmp_path / "empty.npy"
    np.save(p, np.zeros((0, 3)))
    r = run(str(p))
    assert r.exit_code == 1 and "nothing to compare" in r.stderr


@pytest.mark.parametrize("args", [["--variants", "fast"], ["--dtypes", "float8"],
                                  ["--temperature", "0"], ["--temperature", "inf"],
                                  ["--key", "a"], ["--rows", "0"], ["--format", "csv"]])
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2, r.output


def test_help_has_examples():
    r = CliRunner().invoke(cli, ["compare-stability", "--help"])
    assert r.exit_code == 0
    assert "Examples:\n    smx compare-stability\n" in r.stdout
    assert "[FILE]" in r.stdout
    assert "compare-stability" in CliRunner().invoke(cli, ["--help"]).stdout


def test_table_fits_80_columns_without_squeezed_cells():
    """At 80 columns (non-TTY default) whole columns are dropped, not every cell
    squeezed to "0.…"; the caption says which, and a wide terminal shows all."""
    from click.testing import CliRunner

    from smx_cli.cli import cli

    r = CliRunner().invoke(cli, ["compare-stability"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert "…" not in r.stdout
    header = next(ln for ln in lines if "variant" in ln and "verdict" in ln)
    for name in ("dtype", "ovfl", "failed", "max ulp", "verdict"):
        assert name in header
    assert "med ulp" not in header and "Not shown to fit the terminal: med ulp" in r.stdout
    assert re.search(r"float16\s+naive\s+2\s", r.stdout)
    wide = CliRunner().invoke(cli, ["compare-stability"], env={"COLUMNS": "200"})
    header = next(ln for ln in wide.stdout.splitlines() if "variant" in ln and "verdict" in ln)
    assert "med ulp" in header and "|dlogp|" in header and "Not shown" not in wide.stdout
    r = CliRunner().invoke(cli, ["compare-stability", "--sweep"], env={"COLUMNS": "80"})
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80 and "…" not in r.stdout


# ----------------------------------------------------------------------------
# columns: --label-column, --id-column, --columns, --drop-columns (issue 14, point 6)

NAMED = ('name,y,a,b,c\n'
         '"Smith, J",2,1,2,3\n'
         '"say ""hi""",0,3,1,0\n'
         ',1,0,2,30\n'
         'emu,2,5,1,20\n')
LOGITS = np.array([[1.0, 2, 3], [3, 1, 0], [0, 2, 30], [5, 1, 20]])


def _numbers(doc):
    doc = json.loads(json.dumps(doc))  # a deep copy
    doc.pop("source")
    for rep in doc["results"]:
        if rep.get("worst"):
            rep["worst"].pop("id", None)
    return doc


def test_label_and_id_columns_are_left_out(tmp_path):
    """The comparison of a file with label and id columns is that of its logits alone;
    the JSON names each worst row by its id beside its index."""
    p = tmp_path / "s.csv"
    p.write_text(NAMED)
    args = ["--dtypes", "float16,float32", "--variants", "naive,stable,smx", "--format", "json"]
    doc = as_json(run(str(p), "--label-column", "y", "--id-column", "name", *args))
    np.save(tmp_path / "x.npy", LOGITS)
    want = as_json(run(str(tmp_path / "x.npy"), *args))
    assert _numbers(doc) == _numbers(want) and doc["classes"] == 3
    naive = result(doc, "naive", "float16")
    assert naive["verdict"] == "broken" and naive["worst"]["index"] == 2
    assert naive["worst"]["id"] == ""
    ids = ["Smith, J", 'say "hi"', "", "emu"]
    assert all(rep["worst"]["id"] == ids[rep["worst"]["index"]]
               for rep in doc["results"] if rep["worst"])
    # --columns / --drop-columns give the same logits
    for pick in (["--columns", "a,b,c"], ["--columns", "2:"], ["--drop-columns", "y"]):
        got = as_json(run(str(p), "--id-column", "name", *pick, *args))
        assert _numbers(got) == _numbers(want), pick
    # --rows keeps the ids of the rows it keeps
    doc = as_json(run(str(p), "--label-column", "y", "--id-column", "name", "--rows", "2",
                      *args))
    assert doc["rows"] == 2


def test_worst_rows_table_shows_ids(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(NAMED.replace(",1,0,2,30", "\"row #3\",1,0,2,30").replace(
        "emu,2,5,1,20", '"emu, the bird",2,5,1,20'))
    r = run(str(p), "--label-column", "y", "--id-column", "name", "--dtypes", "float16",
            "--variants", "naive,stable")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("worst row of each"))
    assert lines[head + 2].split()[:3] == ["dtype", "variant", "id"]
    assert lines[head + 4].split()[:4] == ["float16", "naive", "row", "#3"]
    # without --id-column the row is named by its index
    r = run(str(p), "--drop-columns", "name,y", "--dtypes", "float16", "--variants", "naive")
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("worst row of each"))
    assert lines[head + 2].split()[2] == "row" and lines[head + 4].split()[2] == "2"


@pytest.mark.parametrize("text, args, why", [
    ("id,a,a,b\nx,1,2,0\n", ["--id-column", "id", "--columns", "a,b"],
     "the header has 2 columns of that name (columns 1, 2)"),
    ("id,id,a,b\nx,y,1,0\n", ["--id-column", "id"], "2 columns of that name"),
    ("name,a,b\nx,1,0\n", ["--id-column", "id"], "no id column 'id' (columns: name, a, b)"),
    ("name,a,b\nx,1,0\n", ["--label-column", "label"], "no label column 'label'"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--label-column", "0"],
     "--id-column and --label-column both name column 0 ('id')"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--drop-columns", "id"],
     "--drop-columns names column 0 ('id'), which --id-column takes"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--drop-columns", "1:"], "no logit columns left"),
    ('id,a,b\n"Smith, J",1,0\ny,oops,0\n', ["--id-column", "id"],
     "line 3, column 2: 'oops' is not a number"),
    ('id,a,b\n"Smith, J",1,0\n', ["--drop-columns", "a"],
     "line 2, column 1: 'Smith, J' is not a number"),
    ("", ["--id-column", "id"], "no data"),
    ("id,a,b\n", ["--id-column", "id"], "only a header row"),
    ("id,a,b\nx,1,0\n", ["--id-column", "id", "--columns", "a", "--drop-columns", "b"],
     "not both"),
])
def test_hostile_columns(tmp_path, text, args, why):
    p = tmp_path / "h.csv"
    p.write_text(text)
    out = tmp_path / "r.json"
    r = run(str(p), *args, "-o", str(out))
    assert r.exit_code == 1, r.output
    assert r.stdout == "" and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def test_column_options_usage_errors(tmp_path):
    assert run("--id-column", "0").exit_code == 2                      # no FILE
    assert run("--columns", "a,,b").exit_code == 2
    p = tmp_path / "s.csv"
    p.write_text(NAMED)
    r = run(str(p), "--id-column", "name", "--scheduler", "synchronous")
    assert r.exit_code == 2 and "--id-column is not supported with --scheduler" in r.stderr
