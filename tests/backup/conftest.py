"""Fixtures of the backup tests: the catalog backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .catalogs import CatalogBackend, catalog_backend, postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogBackend]:
    """Each catalog test runs on both backends, each in storage of its own."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.broker)
    with catalog_backend(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, dropped afterwards."""
    with postgres_database() as url:
        yield url
