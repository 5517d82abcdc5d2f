"""How the webhook transport classifies answers, and what the core then does with them."""

from __future__ import annotations

import base64
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import pytest

from notifykit import Notification, Notifier
from notifykit.deadletters import read_dead_letters
from notifykit.transport import BatchError, PermanentError, TransientError
from notifykit.transports.webhook import WebhookTransport

from ..helpers import FakeClock
from .receiver import Receiver, Reply

pytestmark = pytest.mark.asyncio

CTX = {"request_id": "req-1"}


def notifier(url: str, dead_letter_path: Path, clock: FakeClock | None = None, **kw: object) -> Notifier:
    return Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letter_path, clock=clock, **kw)


def transport_of(n: Notifier) -> WebhookTransport:
    transport = n.transports["http"]
    assert isinstance(transport, WebhookTransport)
    return transport


def ids(requests: list[bytes]) -> list[str]:
    import json

    return [json.loads(body)["id"] for body in requests]


async def test_500_then_200_is_retried_once(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(500, body=b"upstream hiccup"))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        sent = await n.info(CTX, "backup.create.end", {"size": 1})
    stats = n.stats()["http"]
    assert (stats.sent, stats.retried, stats.dead_lettered) == (1, 1, 0)
    assert "HTTP 500: upstream hiccup" in (stats.last_error or "")
    assert ids(receiver.bodies) == [sent.message_id, sent.message_id]
    assert not dead_letter_path.exists()


@pytest.mark.parametrize("status", [408, 425, 429, 502, 503, 504])
async def test_retryable_statuses_are_transient(status: int, receiver: Receiver, dead_letter_path: Path,
                                                fake_clock: FakeClock) -> None:
    receiver.script(Reply(status))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    assert (n.stats()["http"].sent, n.stats()["http"].retried) == (1, 1)


async def test_429_retry_after_seconds_is_waited_for(receiver: Receiver, dead_letter_path: Path,
                                                     fake_clock: FakeClock) -> None:
    receiver.script(Reply(429, headers={"Retry-After": "7"}))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    assert fake_clock.sleeps == [7.0]  # the core's jittered backoff (<= 0.1s) is raised to Retry-After
    assert n.stats()["http"].sent == 1 and len(receiver.requests) == 2


async def test_retry_after_http_date_and_the_core_cap(receiver: Receiver, dead_letter_path: Path,
                                                      fake_clock: FakeClock) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    receiver.script(Reply(503, headers={"Retry-After": later}), Reply(429, headers={"Retry-After": "3600"}))
    n = notifier(receiver.url + "?retry_max_delay=30", dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    first, second = fake_clock.sleeps
    assert 17.0 <= first <= 20.0  # an HTTP-date, counted from now (whole seconds)
    assert second == 30.0  # an hour is capped by retry_max_delay
    assert n.stats()["http"].sent == 1


async def test_400_is_dead_lettered_with_status_and_truncated_body(receiver: Receiver, dead_letter_path: Path,
                                                                   fake_clock: FakeClock) -> None:
    receiver.script(Reply(400, body=b'{"error": "schema mismatch"} ' + b"x" * 20_000))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        sent = await n.info(CTX, "backup.create.end", {"size": 1})
    (letter,) = read_dead_letters(dead_letter_path)
    assert letter["message"]["message_id"] == sent.message_id
    assert letter["reason"].startswith(f"permanent error: POST {receiver.url}: HTTP 400: {{\"error\": \"schema mismatch\"}} xxx")
    assert letter["reason"].endswith("…") and len(letter["reason"]) < 700
    assert len(receiver.requests) == 1 and n.stats()["http"].retried == 0


@pytest.mark.parametrize("status", [401, 403, 404, 410, 413, 422])
async def test_other_4xx_are_permanent(status: int, receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(status))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    (letter,) = read_dead_letters(dead_letter_path)
    assert f"HTTP {status}" in letter["reason"]


async def test_redirects_are_not_followed_by_default(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(307, headers={"Location": "/elsewhere"}))
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    assert [r.path for r in receiver.requests] == ["/hook"]
    (letter,) = read_dead_letters(dead_letter_path)
    assert "HTTP 307 redirect not followed" in letter["reason"]


async def test_redirects_followed_when_enabled(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(307, headers={"Location": "/elsewhere"}))
    n = notifier(receiver.url + "?follow_redirects=true", dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    assert [r.path for r in receiver.requests] == ["/hook", "/elsewhere"]
    assert n.stats()["http"].sent == 1


async def test_echoed_secrets_are_scrubbed_from_errors(receiver: Receiver, dead_letter_path: Path,
                                                       fake_clock: FakeClock) -> None:
    receiver.script(Reply(401, body=b"bad token: Bearer tok-XYZ-123 and secret whsec-123456"))
    url = receiver.url + "?header=Authorization:Bearer tok-XYZ-123&secret=whsec-123456"
    n = notifier(url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
    (letter,) = read_dead_letters(dead_letter_path)
    assert "HTTP 401: bad token: *** and secret ***" in letter["reason"]
    assert "tok-XYZ" not in dead_letter_path.read_text() and "whsec-123456" not in dead_letter_path.read_text()
    assert "tok-XYZ" not in repr(n) and "whsec-123456" not in repr(n)


async def send_held(transport: WebhookTransport, batch: list[Notification], receiver: Receiver,
                    gate: threading.Event) -> BaseException | None:
    """send() while the receiver holds every answer until all requests arrived: outcomes do not race."""
    outcome: list[BaseException] = []

    async def sending() -> None:
        try:
            await transport.send(batch)
        except Exception as exc:
            outcome.append(exc)

    await transport.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sending)
            await receiver.wait_for(len(batch))
            gate.set()
    finally:
        gate.set()
        await transport.aclose()
    return outcome[0] if outcome else None


async def test_per_event_batch_reports_each_failure(receiver: Receiver, dead_letter_path: Path) -> None:
    gate = threading.Event()
    receiver.when(lambda r: b'"seq":1' in r.body, Reply(400, body=b"bad seq", gate=gate))
    receiver.when(lambda r: b'"seq":2' in r.body, Reply(503, gate=gate))
    receiver.when(lambda r: True, Reply(200, gate=gate))
    transport = transport_of(notifier(receiver.url + "?max_concurrency=4", dead_letter_path))
    batch = [Notification.create("backup.create.end", {"seq": i}, publisher_id="p") for i in range(4)]
    error = await send_held(transport, batch, receiver, gate)
    assert isinstance(error, BatchError)
    failures = error.failures
    assert sorted(failures) == [1, 2]
    assert isinstance(failures[1], PermanentError) and "HTTP 400: bad seq" in str(failures[1])
    assert isinstance(failures[2], TransientError) and "HTTP 503" in str(failures[2])
    assert len(receiver.requests) == 4


async def test_batch_all_transient_is_one_transient_error_with_longest_retry_after(receiver: Receiver,
                                                                                   dead_letter_path: Path) -> None:
    gate = threading.Event()
    receiver.when(lambda r: b'"seq":0' in r.body, Reply(429, headers={"Retry-After": "2"}, gate=gate))
    receiver.when(lambda r: b'"seq":1' in r.body, Reply(429, headers={"Retry-After": "5"}, gate=gate))
    transport = transport_of(notifier(receiver.url + "?max_concurrency=2", dead_letter_path))
    batch = [Notification.create("backup.create.end", {"seq": i}, publisher_id="p") for i in range(2)]
    error = await send_held(transport, batch, receiver, gate)
    assert isinstance(error, TransientError) and not isinstance(error, BatchError)
    assert error.retry_after == 5.0 and "all 2 requests failed" in str(error)


async def test_first_transient_failure_stops_the_rest_of_the_batch(receiver: Receiver, dead_letter_path: Path) -> None:
    receiver.script(Reply(503, headers={"Retry-After": "4"}))
    transport = transport_of(notifier(receiver.url + "?max_concurrency=1", dead_letter_path))
    batch = [Notification.create("backup.create.end", {"seq": i}, publisher_id="p") for i in range(5)]
    await transport.open()
    try:
        with pytest.raises(TransientError) as info:
            await transport.send(batch)
        assert len(receiver.requests) == 1  # a down or overloaded peer is not hammered (nor waited on) 5 times
        assert info.value.retry_after == 4.0
        await transport.send(batch)  # the core's retry: the peer is back
    finally:
        await transport.aclose()
    assert len(receiver.requests) == 6


async def test_mixed_batch_through_the_core(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.when(lambda r: b'"seq":1' in r.body, Reply(422))
    receiver.script(Reply(503))  # whichever request comes first fails once
    n = notifier(receiver.url, dead_letter_path, fake_clock)
    async with n:
        for i in range(5):
            await n.info(CTX, "backup.create.end", {"seq": i})
    stats = n.stats()["http"]
    assert (stats.sent, stats.dead_lettered) == (4, 1)
    (letter,) = read_dead_letters(dead_letter_path)
    assert letter["message"]["payload"] == {"seq": 1} and "HTTP 422" in letter["reason"]


async def test_timeout_is_transient_then_delivered(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    gate = threading.Event()
    receiver.script(Reply(200, gate=gate))
    n = notifier(receiver.url + "?timeout=0.5", dead_letter_path, fake_clock)
    try:
        async with n:
            await n.info(CTX, "backup.create.end", {"size": 1})
    finally:
        gate.set()
    stats = n.stats()["http"]
    assert stats.sent == 1 and stats.retried >= 1
    assert "no response within timeout=0.5s" in (stats.last_error or "")


async def test_server_down_then_up_loses_nothing(idle_receiver: Receiver, dead_letter_path: Path) -> None:
    # Real clock with short backoff: the receiver is started while the core is retrying.
    url = idle_receiver.url + "?retry_initial_delay=0.02&retry_max_delay=0.1&circuit_reset_timeout=0.1"
    n = notifier(url, dead_letter_path)
    sent = []
    async with n:
        for i in range(20):
            sent.append(await n.info(CTX, "backup.create.end", {"seq": i}))
        with anyio.fail_after(10):
            while n.stats()["http"].retried == 0:
                await anyio.sleep(0.01)
        assert n.stats()["http"].sent == 0
        await anyio.to_thread.run_sync(idle_receiver.start)
        await idle_receiver.wait_for(20, answered=True)
    stats = n.stats()["http"]
    assert stats.sent == 20 and stats.dead_lettered == 0
    assert "ConnectError" in (stats.last_error or "")
    assert sorted(set(ids(idle_receiver.bodies))) == sorted(s.message_id for s in sent)
    assert not dead_letter_path.exists()


async def test_slow_server_blocks_neither_caller_nor_other_transports(receiver: Receiver, dead_letter_path: Path) -> None:
    gate = threading.Event()
    receiver.when(lambda r: True, Reply(200, gate=gate))
    n = Notifier.from_config({
        "publisher_id": "backup.host1",
        "transports": {"hook": {"url": receiver.url}, "mem": {"url": "memory://"}},
    }, dead_letters=dead_letter_path)
    try:
        async with n:
            with anyio.fail_after(5):  # a bound, not a measurement: a blocked caller would hang here
                for i in range(3):
                    await n.info(CTX, "backup.create.end", {"seq": i})
                await receiver.wait_for(1)  # the webhook request is in the (stuck) receiver
                while len(n.transports["mem"].messages) < 3:  # type: ignore[attr-defined]
                    await anyio.sleep(0.01)
            assert n.stats()["hook"].sent == 0  # still waiting on the receiver
            assert n.stats()["mem"].sent == 3
            gate.set()
            await receiver.wait_for(3, answered=True)
    finally:
        gate.set()
    assert n.stats()["hook"].sent == 3


async def test_concurrency_is_bounded(receiver: Receiver, dead_letter_path: Path) -> None:
    gate = threading.Event()
    receiver.when(lambda r: True, Reply(200, gate=gate))
    transport = transport_of(notifier(receiver.url + "?max_concurrency=3", dead_letter_path))
    batch = [Notification.create("backup.create.end", {"seq": i}, publisher_id="p") for i in range(10)]
    await transport.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.send, batch)
            await receiver.wait_for(3)
            await anyio.sleep(0.2)  # room for a 4th request, were the bound broken
            assert len(receiver.requests) == 3
            gate.set()
    finally:
        gate.set()
        await transport.aclose()
    assert len(receiver.requests) == 10


async def test_no_secret_in_any_log_record_even_at_debug(receiver: Receiver, dead_letter_path: Path,
                                                         fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: notifykit's, httpx's and httpcore's
    receiver.script(Reply(500), Reply(403, body=b"denied for Bearer tok-4f9a-secret"))
    url = (receiver.url.replace("http://", "http://svc:pw-77x1@")
           + "?header=X-Api-Key:Bearer tok-4f9a-secret&secret=whsec-9d2e&retry_max_attempts=1")
    n = notifier(url, dead_letter_path, fake_clock)
    async with n:
        await n.info(CTX, "backup.create.end", {"size": 1})
        await n.info(CTX, "backup.create.end", {"size": 2})
    assert receiver.requests[0].headers["x-api-key"] == "Bearer tok-4f9a-secret"  # it was sent…
    assert receiver.requests[0].headers["authorization"].startswith("Basic ")
    assert caplog.records  # …and there were log records to leak into
    logged = caplog.text + dead_letter_path.read_text() + repr(n) + repr(n.stats())
    for secret in ("tok-4f9a", "whsec-9d2e", "pw-77x1", base64.b64encode(b"svc:pw-77x1").decode()):
        assert secret not in logged
