"""A Notifier as a pytest-asyncio fixture (issue 23, reproduction 3), as docs/testing.md shows.

pytest-asyncio runs a fixture's setup and teardown in different tasks; every teardown
here raised "Attempted to exit cancel scope in a different task" while the Notifier's
task group was entered by start() in the caller's task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from notifykit import Notifier


def _notifier(folder: Path) -> Notifier:
    return Notifier.from_url("memory://", publisher_id="backup.test", dead_letters=folder / "dl.jsonl")


@pytest_asyncio.fixture
async def notifier_with(tmp_path: Path) -> AsyncIterator[Notifier]:
    async with _notifier(tmp_path) as notifier:
        yield notifier
    assert notifier.stats()["memory"].sent == 1  # delivered at teardown's close


@pytest_asyncio.fixture
async def notifier_started(tmp_path: Path) -> AsyncIterator[Notifier]:
    notifier = _notifier(tmp_path)
    await notifier.start()
    yield notifier
    await notifier.aclose()
    assert notifier.stats()["memory"].sent == 1


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_notifier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Notifier]:
    async with _notifier(tmp_path_factory.mktemp("session-notifier")) as notifier:
        yield notifier


@pytest.mark.asyncio
async def test_function_fixture_with_async_with(notifier_with: Notifier) -> None:
    await notifier_with.info({}, "backup.create.end", {"backup_id": "b-1"})


@pytest.mark.asyncio
async def test_function_fixture_with_start_and_aclose(notifier_started: Notifier) -> None:
    await notifier_started.info({}, "backup.create.end", {"backup_id": "b-1"})


@pytest.mark.asyncio(loop_scope="session")
async def test_session_fixture_first(session_notifier: Notifier) -> None:
    await session_notifier.info({}, "backup.create.start", {"backup_id": "b-1"})


@pytest.mark.asyncio(loop_scope="session")
async def test_session_fixture_second_sees_the_first(session_notifier: Notifier) -> None:
    await session_notifier.info({}, "backup.create.end", {"backup_id": "b-1"})
    assert session_notifier.stats()["memory"].enqueued == 2  # one Notifier for the whole session
