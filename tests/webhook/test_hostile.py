"""A hostile receiver (slow, redirecting, echoing) can neither hold a request, lose it, nor learn a secret."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from notifykit import ConfigError, Notifier
from notifykit.deadletters import read_dead_letters

from ..helpers import FakeClock
from .hostile import Behaviour, HostilePeer, huge_body, trickle_body, trickle_headers
from .receiver import Receiver, Reply

pytestmark = pytest.mark.asyncio

CTX = {"request_id": "req-1"}
#: Generous bound on a test that, before the fix, never finished at all.
HANG_GUARD = 30


def notifier(url: str, dead_letter_path: Path, clock: FakeClock) -> Notifier:
    # One attempt: what the transport reported is the dead letter's reason, at once.
    sep = "&" if "?" in url else "?"
    return Notifier.from_url(f"{url}{sep}retry_max_attempts=1", publisher_id="backup.host1",
                             dead_letters=dead_letter_path, clock=clock)


async def send_one(url: str, dead_letter_path: Path, clock: FakeClock) -> Notifier:
    n = notifier(url, dead_letter_path, clock)
    with anyio.fail_after(HANG_GUARD):
        async with n:
            await n.info(CTX, "backup.create.end", {"size": 1})
    return n


def reason(dead_letter_path: Path) -> str:
    (letter,) = read_dead_letters(dead_letter_path)
    return str(letter["reason"])


@pytest.fixture
def other_host() -> Iterator[Receiver]:
    """A receiver on 127.0.0.2: another host, as far as origins go."""
    server = Receiver(host="127.0.0.2")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- reproduction 1: one deadline for connect + headers + body --------------------------------------


@pytest.mark.parametrize("behaviour", [trickle_headers, trickle_body], ids=["headers-trickled", "body-trickled"])
async def test_a_trickling_receiver_cannot_hold_a_request(behaviour: Callable[[float], Behaviour],
                                                          dead_letter_path: Path, fake_clock: FakeClock) -> None:
    # Each piece arrives well within httpx's per-read timeout; only an overall deadline stops it.
    with HostilePeer(behaviour(0.05)) as peer:
        n = await send_one(peer.url + "?timeout=0.5", dead_letter_path, fake_clock)
    stats = n.stats()["http"]
    assert (stats.sent, stats.dead_lettered, stats.in_flight) == (0, 1, 0)
    assert "no response within timeout=0.5s" in reason(dead_letter_path)


async def test_an_endless_error_body_is_read_only_up_to_the_cap(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    with HostilePeer(huge_body()) as peer:
        await send_one(peer.url + "?timeout=5", dead_letter_path, fake_clock)
    text = reason(dead_letter_path)
    assert "HTTP 400: " in text and text.endswith("…") and len(text) < 1000


# -- reproduction 2: no redirect to another origin ------------------------------------------------


async def test_a_307_to_another_host_is_not_followed(receiver: Receiver, other_host: Receiver,
                                                     dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(307, headers={"Location": other_host.url}))
    url = receiver.url + "?follow_redirects=true&header=X-Api-Key:key-0123456789&secret=whsec-0123456789"
    n = await send_one(url, dead_letter_path, fake_clock)
    assert other_host.requests == []  # neither the header secret nor the signed body left the origin
    assert n.stats()["http"].sent == 0
    text = reason(dead_letter_path)
    assert "redirect to another origin http://127.0.0.2:" in text and "redirect_origin" in text


async def test_a_listed_origin_is_followed(receiver: Receiver, other_host: Receiver, dead_letter_path: Path,
                                           fake_clock: FakeClock) -> None:
    receiver.script(Reply(308, headers={"Location": other_host.url}))
    origin = f"http://127.0.0.2:{other_host.port}"
    n = await send_one(receiver.url + f"?follow_redirects=true&redirect_origin={origin}", dead_letter_path, fake_clock)
    assert n.stats()["http"].sent == 1
    [moved] = other_host.requests
    assert moved.method == "POST" and json.loads(moved.body)["type"] == "backup.create.end"


async def test_redirect_origin_must_be_an_origin_and_needs_follow_redirects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be an origin like"):
        Notifier.from_url("http://127.0.0.1:9/hook?follow_redirects=true&redirect_origin=http://h/path",
                          publisher_id="p", dead_letters=tmp_path / "dl")
    with pytest.raises(ConfigError, match="needs follow_redirects=true"):
        Notifier.from_url("http://127.0.0.1:9/hook?redirect_origin=http://h:81", publisher_id="p",
                          dead_letters=tmp_path / "dl")


# -- reproduction 3: a POST never becomes a GET; a loop is permanent ----------------------------


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_a_redirect_that_would_turn_the_post_into_a_get_is_permanent(
        status: int, receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.script(Reply(status, headers={"Location": "/moved"}))
    n = await send_one(receiver.url + "?follow_redirects=true", dead_letter_path, fake_clock)
    assert [r.method for r in receiver.requests] == ["POST"]  # no body-less GET counted as sent
    assert (n.stats()["http"].sent, n.stats()["http"].dead_lettered) == (0, 1)
    assert f"HTTP {status} redirect to http://127.0.0.1:{receiver.port}/moved not followed" in reason(dead_letter_path)


async def test_a_redirect_loop_is_permanent(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    receiver.when(lambda r: r.path == "/hook", Reply(307, headers={"Location": "/other"}))
    receiver.when(lambda r: r.path == "/other", Reply(307, headers={"Location": "/hook"}))
    # Even with retrying for a long while, a loop is not retried: it is a configuration problem.
    n = Notifier.from_url(receiver.url + "?follow_redirects=true&retry_max_elapsed=3600", publisher_id="p",
                          dead_letters=dead_letter_path, clock=fake_clock)
    with anyio.fail_after(HANG_GUARD):
        async with n:
            await n.info(CTX, "backup.create.end", {"size": 1})
    assert (n.stats()["http"].retried, n.stats()["http"].dead_lettered) == (0, 1)
    assert [r.path for r in receiver.requests] == ["/hook", "/other"]
    assert "redirect loop back to" in reason(dead_letter_path)


async def test_a_same_origin_307_is_still_followed(receiver: Receiver, dead_letter_path: Path,
                                                   fake_clock: FakeClock) -> None:
    receiver.script(Reply(307, headers={"Location": "/elsewhere"}))
    n = await send_one(receiver.url + "?follow_redirects=true", dead_letter_path, fake_clock)
    assert [(r.method, r.path) for r in receiver.requests] == [("POST", "/hook"), ("POST", "/elsewhere")]
    assert n.stats()["http"].sent == 1


# -- reproduction 4: an echoed credential, in the encoding it was sent in ----------------------


async def test_echoed_basic_credentials_are_scrubbed(receiver: Receiver, dead_letter_path: Path,
                                                     fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    token = base64.b64encode(b"metering:pa55-w0rd-XYZ").decode()

    receiver.when(lambda request: True, Reply(400, body=f"bad request; you sent Authorization: Basic {token}".encode()))
    url = receiver.url.replace("http://", "http://metering:pa55-w0rd-XYZ@")
    with caplog.at_level(logging.DEBUG):
        n = await send_one(url, dead_letter_path, fake_clock)
    assert receiver.requests[0].headers["authorization"] == f"Basic {token}"  # it was sent, and echoed
    written = dead_letter_path.read_text() + caplog.text + repr(n) + str(n.stats()["http"].last_error)
    assert token not in written and "pa55-w0rd-XYZ" not in written
    assert "you sent Authorization: Basic ***" in reason(dead_letter_path)


async def test_an_echoed_bearer_token_alone_is_scrubbed(receiver: Receiver, dead_letter_path: Path,
                                                        fake_clock: FakeClock) -> None:
    receiver.script(Reply(403, body=b"token tok-0123456789abc is revoked"))
    await send_one(receiver.url + "?header=Authorization:Bearer tok-0123456789abc", dead_letter_path, fake_clock)
    assert "token *** is revoked" in reason(dead_letter_path)
    assert "tok-0123456789abc" not in dead_letter_path.read_text()
