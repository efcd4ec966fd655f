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
