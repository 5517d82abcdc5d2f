"""Helpers shared by the tests: broker gating (and the servers of scripts/), a controllable
clock, a crashing publisher, the accounting invariant."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.text import TextReceiveStream

from notifykit import Notifier
from notifykit.deadletters import read_dead_letters
from notifykit.testing import ManualClock, MemoryTransport

from ._servers import load_script

REQUIRE_BROKERS = os.environ.get("NOTIFYKIT_REQUIRE_BROKERS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` (one line), or fail with it under NOTIFYKIT_REQUIRE_BROKERS=1."""
    if REQUIRE_BROKERS:
        pytest.fail(f"{reason}; NOTIFYKIT_REQUIRE_BROKERS=1 makes this a failure")
    pytest.skip(reason)


def require_tcp(host: str, port: int, what: str) -> None:
    """Skip (or fail under NOTIFYKIT_REQUIRE_BROKERS=1) when nothing listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        unavailable(f"{what} not reachable on {host}:{port} ({exc.strerror or exc})")


@contextmanager
def script_server(tmp_path_factory: pytest.TempPathFactory, script: str, server_class: str, what: str,
                  packages: str) -> Iterator[Any]:
    """The server of scripts/SCRIPT (its class ``server_class``), started in a fresh temp dir
    named after the script and stopped by PID on exit. When its binaries are missing: skip
    with one line naming them and the Debian ``packages`` (fail under NOTIFYKIT_REQUIRE_BROKERS=1)."""
    module = load_script(script)
    missing = module.missing_binaries()
    if missing:
        unavailable(f"{what} not installed (missing {', '.join(missing)}; apt-get install {packages})")
    server = getattr(module, server_class)(tmp_path_factory.mktemp(script))
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Virtual time (sleep() advances it at once): the public test clock under the tests' old name.
FakeClock = ManualClock


#: A durable publisher for crash tests: emits forever and prints each message_id once
#: notify() returned. argv: URL SPOOL DEAD_LETTERS.
CRASHING_PUBLISHER = """
import anyio, sys
from notifykit import Notifier

async def main():
    async with Notifier.from_url(sys.argv[1], publisher_id="crash", spool=sys.argv[2], dead_letters=sys.argv[3]) as n:
        i = 0
        while True:
            print((await n.info({}, "backup.createprogress", {"i": i})).message_id, flush=True)
            i += 1

anyio.run(main)
"""


async def run_publisher_then_sigkill(url: str, spool: Path, dead_letters: Path, lines: int,
                                     timeout: float = 120) -> list[str]:
    """Run CRASHING_PUBLISHER until it printed ``lines`` ids, SIGKILL it, and return the ids
    whose notify() had returned (complete lines only)."""
    script = spool.with_name(f"publisher-{os.getpid()}.py")
    script.write_text(CRASHING_PUBLISHER)
    proc = await anyio.open_process([sys.executable, str(script), url, str(spool), str(dead_letters)])
    assert proc.stdout is not None
    text = ""
    try:
        with anyio.fail_after(timeout):
            async for chunk in TextReceiveStream(proc.stdout):
                text += chunk
                if text.count("\n") >= lines:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return text.split("\n")[:-1]


#: Where every notification a transport took on (``enqueued``) must be, at every await point.
HELD = ("sent", "dropped", "dead_lettered", "dead_letter_failed", "queue_depth", "in_flight", "spooled")


def assert_accounted(notifier: Notifier, dead_letters: Path | None = None) -> dict[str, dict[str, Any]]:
    """The accounting invariant, computed here from the counters (not with the code under
    test): per transport ``enqueued == sent + dropped + dead_lettered + dead_letter_failed
    + queue_depth + in_flight + spooled``. Where the truth is observable it is checked
    too: a memory transport's deliveries equal ``sent``; the dead-letter file holds
    ``dead_lettered`` letters of that transport. Returns the counters by transport."""
    rows = {name: stats.as_dict() for name, stats in notifier.stats().items()}
    on_disk: Counter[str] = Counter()
    if dead_letters is not None and dead_letters.exists():
        on_disk.update(str(record["transport"]) for record in read_dead_letters(dead_letters))
    for name, row in rows.items():
        held = {key: row.get(key, 0) for key in HELD}
        assert row["enqueued"] == sum(held.values()), f"{name}: enqueued={row['enqueued']} but {held}"
        assert row["delivery_latency"]["count"] == row["sent"], f"{name}: {row['delivery_latency']} for sent={row['sent']}"
        transport = notifier.transports[name]
        if isinstance(transport, MemoryTransport):
            assert transport.delivered == row["sent"], f"{name}: delivered {transport.delivered}, sent={row['sent']}"
        if dead_letters is not None:
            assert on_disk[name] == row["dead_lettered"], \
                f"{name}: {on_disk[name]} dead letter(s) on disk, dead_lettered={row['dead_lettered']}"
    return rows
