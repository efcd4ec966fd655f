"""The reader fuzzer, bounded for CI (about 10 s): random bytes, random CSV-like
text, and mutations of valid CSV/NPY/NPZ samples go through
``smx_cli.io.read_array``, ``smx_cli.io.labels.read_labels`` and
``smx softmax FILE --format csv``. Any input gives a result or a one-line
error (SmxError; exit 1 or 2) -- never another exception, a traceback, or a
hang (hypothesis' deadline: 2 s per input).

The long run is ``python tests/fuzz_long.py --seconds 600``; the mutations
are shared (see ``fuzz_long.py``). More examples here: HYPOTHESIS_PROFILE=long.
"""
from __future__ import annotations

import os
import random

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_long import (TOKENS, Failure, check_cli, check_read, mutate, mutate_npz_member,
                       seed_inputs)
from smx_cli.cli import cli

SEEDS = seed_inputs()
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
BUDGET = {"ci": 1.0, "long": 10.0}.get(PROFILE, 1.0)


def fuzz_settings(n):
    return settings(max_examples=int(n * BUDGET), deadline=2000, derandomize=PROFILE == "ci",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "input")


def _through_all(path: str, data: bytes, options: dict | None = None, cli_too: bool = True):
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        check_read(path, options or {})
        if cli_too:
            check_cli(path)
    except Failure as exc:
        raise AssertionError(f"{exc}\ninput: {data[:400]!r}") from None


@fuzz_settings(1500)
@given(data=st.binary(max_size=400))
def test_random_bytes(path, data):
    _through_all(path, data, cli_too=len(data) % 3 == 0)


@fuzz_settings(1500)
@given(text=st.text(alphabet="0123456789.,;\t -+eEinfaINFA#\n\r\"x", max_size=200),
       options=st.sampled_from([{}, {"header": True}, {"header": False},
                                {"delimiter": ","}, {"delimiter": " "}]))
def test_csv_like_text(path, text, options):
    _through_all(path, text.encode(), options)


@fuzz_settings(3000)
@given(seed=st.sampled_from(SEEDS), rng=st.randoms(use_true_random=False),
       options=st.sampled_from([{}, {"header": True}, {"key": "logits"}, {"key": "nope"}]))
def test_mutated_samples(path, seed, rng, options):
    _through_all(path, mutate(seed, rng, SEEDS), options)


@fuzz_settings(800)
@given(seed=st.sampled_from([s for s in SEEDS if s.startswith(b"PK")]),
       rng=st.randoms(use_true_random=False))
def test_mutated_npz_members(path, seed, rng):
    _through_all(path, mutate_npz_member(seed, rng))


@fuzz_settings(600)
@given(seed=st.sampled_from(SEEDS), rng=st.randoms(use_true_random=False))
def test_mutated_stdin(seed, rng):
    data = mutate(seed, rng, SEEDS)
    r = CliRunner().invoke(cli, ["softmax", "-", "--format", "csv"], input=data)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1)
    if r.exit_code:
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("Error: <stdin>")


def test_mutations_really_mutate():
    """The fuzzer is not fuzzing the seeds themselves: most mutants differ, and
    they reach both outcomes (results and errors)."""
    rng = random.Random(0)
    mutants = [mutate(s, rng, SEEDS) for s in SEEDS for _ in range(20)]
    assert sum(m not in SEEDS for m in mutants) > 0.9 * len(mutants)
    assert any(t in m for m in mutants for t in TOKENS[:10])
