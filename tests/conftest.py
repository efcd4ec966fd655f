import importlib
import os

import pytest


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch):
    """Every test sees a fixed-width, colourless terminal."""
    for var in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TERM", "CLICOLOR_FORCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")


SAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "samples")


def need(module: str):
    """Import ``module`` for an agreement test: skip without it, but FAIL in CI.

    CI (``CI=true``, set by ``.ci/run``) installs PyTorch and entmax; a test that
    compares with them must not pass by skipping there.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is required in CI (CI=true) but cannot be imported: {exc}")
        pytest.skip(f"{module} is not installed")


@pytest.fixture
def torch():
    """PyTorch, for the agreement tests (required when CI=true)."""
    return need("torch")


def pytest_report_header(config):
    """Which engine the suite exercises (CI runs it twice: native, then SMX_ENGINE=numpy)."""
    from smx_cli.core import native

    built = "built" if native.available() else f"not built: {native.why_unavailable()}"
    return f"smx engine: {native.engine()} (compiled core {built})"
