"""smx softmax on NPY files streams in row blocks: same numbers, same diagnostics."""
import numpy as np
import pytest
from click.testing import CliRunner

import smx_cli.analysis.pipeline as cmd_softmax
from smx_cli.cli import cli
from smx_cli.analysis.diagnostics import Accumulator, diagnose
from smx_cli.core.softmax import compute


def special_logits():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 30, (57, 13)).astype(np.float32)
    x[3, 2] = np.nan
    x[10, :] = -np.inf
    x[11, [0, 5]] = np.inf
    x[20, 4] = -np.inf
    x[30] = 200.0
    return x


@pytest.mark.parametrize("variant", ["stable", "log", "naive", "sparsemax"])
def test_block_diagnostics_equal_whole_array_diagnostics(variant):
    x = special_logits()
    from smx_cli.core.registry import SPARSE_OUTPUT, run

    whole = run(x, variant).result
    ref = diagnose(x, whole, sparse=variant in SPARSE_OUTPUT)
    acc = Accumulator(variant, whole.fmt, whole.kind, whole.emulated, sparse=variant in SPARSE_OUTPUT,
                      engine=whole.engine)
    for s in range(0, len(x), 7):  # blocks that do not divide N
        part = run(x[s:s + 7], variant).result
        acc.add(x[s:s + 7], part.values, part.stats)
    got = acc.result()
    assert got.to_dict() == ref.to_dict()


def test_streamed_output_matches_the_api_and_reports_special_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(cmd_softmax, "STREAM_BLOCK", 13 * 4 * 5)  # 5 rows per block
    x = special_logits()
    src, out = tmp_path / "x.npy", tmp_path / "p.npy"
    np.save(src, x)
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(out), "--rows", "3"])
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), compute(x).values)
    # -o: the data went to the file; stderr says so, with the diagnostics in one line
    assert r.stdout == "" and f"wrote {out}" in r.stderr and "smx: diagnostics:" in r.stderr
    r = CliRunner().invoke(cli, ["softmax", str(src), "--rows", "3"])
    assert "streamed in row blocks" in r.stdout
    assert "54 more rows not shown" in r.stdout
    assert "NaN 1" in r.stdout and "fully masked rows 1" in r.stdout
    ref = diagnose(x, compute(x))
    assert f"NaN entries in {ref.output_nan_rows} rows" in r.stdout


def test_streamed_strict_and_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(cmd_softmax, "STREAM_BLOCK", 13 * 4 * 5)
    x = special_logits()
    src = tmp_path / "x.npy"
    np.save(src, x)
    r = CliRunner().invoke(cli, ["softmax", str(src), "--strict"])
    assert r.exit_code == 1 and "--strict" in r.stderr
    out = tmp_path / "f.npy"
    r = CliRunner().invoke(cli, ["softmax", str(src), "--fast", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), compute(x, fast=True).values)


def test_streamed_3d_input_keeps_its_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(cmd_softmax, "STREAM_BLOCK", 64)
    x = np.random.default_rng(1).normal(size=(4, 5, 6))
    src, out = tmp_path / "x.npy", tmp_path / "p.npy"
    np.save(src, x)
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    got = np.load(out)
    assert got.shape == (4, 5, 6)
    np.testing.assert_array_equal(got, compute(x.reshape(-1, 6)).values.reshape(4, 5, 6))


def test_big_csv_streams_with_header_comments_and_exact_output(tmp_path, monkeypatch):
    monkeypatch.setattr(cmd_softmax, "TEXT_STREAM_BYTES", 0)
    monkeypatch.setattr(cmd_softmax, "TEXT_BLOCK", 200)  # many blocks
    x = np.random.default_rng(3).normal(0, 5, (60, 4))
    lines = ["a,b,c,d", "# a comment"]
    for i, row in enumerate(x):
        lines.append(",".join(repr(float(v)) for v in row))
        if i == 30:
            lines.append("")
    src = tmp_path / "x.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(out), "--rows", "2"])
    assert r.exit_code == 0, r.stderr
    assert "smx: diagnostics: ok -- 60 rows" in r.stderr
    r = CliRunner().invoke(cli, ["softmax", str(src), "--rows", "2"])
    assert "streamed in row blocks" in r.stdout
    text = out.read_text().splitlines()
    assert text[0] == "a,b,c,d"
    got = np.array([[float(v) for v in ln.split(",")] for ln in text[1:]])
    np.testing.assert_array_equal(got, compute(x).values)


def test_big_csv_error_names_the_files_own_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cmd_softmax, "TEXT_STREAM_BYTES", 0)
    monkeypatch.setattr(cmd_softmax, "TEXT_BLOCK", 64)
    lines = [f"{i},{i + 1},{i + 2}" for i in range(40)]
    lines[33] = "1,oops,3"
    src = tmp_path / "x.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(cli, ["softmax", str(src), "-o", str(out)])
    assert r.exit_code == 1
    assert "line 34, column 2" in r.stderr and "'oops'" in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["x.csv"]
    lines[33] = "1,2,3"
    lines[36] = "1,2"
    src.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(cli, ["softmax", str(src)])
    assert r.exit_code == 1 and "line 37 has 2 values, expected 3" in r.stderr
