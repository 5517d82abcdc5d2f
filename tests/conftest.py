"""Shared fixtures: a controllable clock and a dead-letter file per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dead_letter_path(tmp_path: Path) -> Path:
    return tmp_path / "deadletters.jsonl"
