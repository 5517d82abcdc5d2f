"""The Tansu broker fixture: one per test session, skipped (or failed under NOTIFYKIT_REQUIRE_BROKERS=1) when it cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from ..helpers import unavailable
from .tansu import Tansu, TansuUnavailable, find_tansu


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"Kafka broker (tansu) unavailable: {reason}")


@pytest.fixture(scope="session")
def tansu_binary() -> Path:
    try:
        return find_tansu()
    except TansuUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def kafka_broker(tansu_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A running broker shared by the session; tests use their own (uuid) topic names."""
    broker = Tansu(tansu_binary, log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    try:
        broker.start()
    except TansuUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tansu_binary: Path, tmp_path: Path) -> Iterator[Tansu]:
    """A broker of the test's own (not started), for tests that stop and restart it."""
    broker = Tansu(tansu_binary, log_path=tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()
