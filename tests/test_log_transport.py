"""``log://``: every mode writes off the event loop (issue 23, reproduction 12)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from notifykit import Notifier

pytestmark = pytest.mark.asyncio


class Threads(logging.Handler):
    """Records each line and the thread that logged it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((threading.get_ident(), record.levelno, record.getMessage()))


async def test_logger_mode_logs_in_a_worker_thread_in_order(dead_letter_path: Path) -> None:
    """In logger mode each notification was logged on the event loop, although the docs say
    writes run in a worker thread: a slow handler (a file on a slow disk, a socket) blocked
    every other task. Now the lines are logged in a worker thread, in order, each at the
    level of its priority."""
    logger = logging.getLogger("notifykit.test-log-transport")
    handler = Threads()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    loop_thread = threading.get_ident()
    try:
        async with Notifier.from_url("log://?logger=notifykit.test-log-transport", publisher_id="t",
                                     dead_letters=dead_letter_path) as n:
            for i in range(50):
                await n.info({}, "e.v", {"i": i})
            await n.error({}, "e.v", {"i": 50})
    finally:
        logger.removeHandler(handler)
    assert n.stats()["log"].sent == 51
    assert len(handler.lines) == 51 and all(thread != loop_thread for thread, _, _ in handler.lines)
    assert [json.loads(line)["payload"]["i"] for _, _, line in handler.lines] == list(range(51))
    assert [level for _, level, _ in handler.lines] == [logging.INFO] * 50 + [logging.ERROR]
