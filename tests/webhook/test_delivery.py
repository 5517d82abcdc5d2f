"""The webhook transport against a real uvicorn receiver: bodies, headers, CloudEvents, signatures."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event, from_http_event, from_structured_event

from notifykit import Notification, Notifier, WireFormat
from notifykit.signing import SIGNATURE_HEADER, SignatureError, verify
from notifykit.transport import decode_message

from ..helpers import FakeClock
from .receiver import Receiver

pytestmark = pytest.mark.asyncio

CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
PAYLOAD = {"backup_id": "b-1", "size": 3, "name": "nightly ü"}


async def emit(url: str, dead_letter_path: Path, clock: FakeClock, count: int = 1,
               publisher_id: str = "backup.host1") -> tuple[list[Notification], Notifier]:
    notifier = Notifier.from_url(url, publisher_id=publisher_id, dead_letters=dead_letter_path, clock=clock)
    sent = []
    async with notifier:
        for i in range(count):
            sent.append(await notifier.info(CTX, "backup.create.end", {**PAYLOAD, "seq": i}))
    return sent, notifier


def assert_event(event: Any, n: Notification) -> None:
    assert event.get_id() == n.message_id
    assert event.get_type() == n.event_type
    assert event.get_source() == n.publisher_id
    assert event.get_time() == n.timestamp
    assert event.get_data() == dict(n.payload)
    assert event.get_extension("requestid") == "req-1"
    assert event.get_extension("priority") == "info"


async def test_structured_cloudevents_by_default(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = receiver.url + "?header=X-Tenant:acme&header=Accept:application/json, text/plain"
    (n,), notifier = await emit(url, dead_letter_path, fake_clock)
    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["accept"] == "application/json, text/plain"  # a comma does not split a header option
    assert request.headers["user-agent"].startswith("notifykit/")
    assert SIGNATURE_HEADER.lower() not in request.headers  # no secret, no signature
    assert request.body == n.encode(WireFormat.CLOUDEVENTS)
    assert_event(from_http_event(HTTPMessage(request.headers, request.body)), n)
    assert_event(from_structured_event(HTTPMessage(request.headers, request.body)), n)
    assert notifier.stats()["http"].sent == 1


async def test_binary_mode_puts_attributes_in_ce_headers(receiver: Receiver, dead_letter_path: Path,
                                                         fake_clock: FakeClock) -> None:
    # A publisher_id with a space, a quote and non-ASCII must be percent-encoded in its header.
    (n,), _ = await emit(receiver.url + "?mode=binary", dead_letter_path, fake_clock, publisher_id='backup "höst" 1')
    (request,) = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert request.headers["ce-specversion"] == "1.0"
    assert request.headers["ce-id"] == n.message_id
    assert request.headers["ce-source"] == "backup%20%22h%C3%B6st%22%201"
    assert json.loads(request.body) == dict(n.payload)
    event = from_binary_event(HTTPMessage(request.headers, request.body))
    assert_event(event, n)
    assert event.get_source() == 'backup "höst" 1'


@pytest.mark.parametrize("fmt", ["oslo", "json"])
async def test_oslo_and_json_bodies(fmt: str, receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    (n,), _ = await emit(f"{receiver.url}?format={fmt}", dead_letter_path, fake_clock)
    (request,) = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert request.body == n.encode(fmt)
    decoded = decode_message(request.body)
    assert decoded["format"] == fmt
    assert decoded["message_id"] == n.message_id and decoded["payload"] == dict(n.payload)


async def test_cloudevents_batch_is_one_request_per_batch(receiver: Receiver, dead_letter_path: Path,
                                                          fake_clock: FakeClock) -> None:
    sent, notifier = await emit(receiver.url + "?batch=true&max_batch=10", dead_letter_path, fake_clock, count=25)
    assert notifier.stats()["http"].sent == 25
    assert 3 <= len(receiver.requests) < 25  # batches of at most 10
    events = []
    for request in receiver.requests:
        assert request.headers["content-type"] == "application/cloudevents-batch+json"
        items = json.loads(request.body)
        assert isinstance(items, list) and 1 <= len(items) <= 10
        for item in items:
            message = HTTPMessage({"content-type": "application/cloudevents+json"}, json.dumps(item).encode())
            events.append(from_structured_event(message))
    assert len(events) == 25
    for event, n in zip(events, sent, strict=True):  # order kept
        assert_event(event, n)


async def test_json_batch_is_a_json_array(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    sent, _ = await emit(receiver.url + "?batch=true&format=json", dead_letter_path, fake_clock, count=3)
    bodies = [item for r in receiver.requests for item in json.loads(r.body)]
    assert all(r.headers["content-type"] == "application/json" for r in receiver.requests)
    assert [b["message_id"] for b in bodies] == [n.message_id for n in sent]


async def test_signed_requests_verify_and_tampering_fails(receiver: Receiver, dead_letter_path: Path,
                                                          fake_clock: FakeClock) -> None:
    secret = "whsec-Zq81-do-not-log"
    _, notifier = await emit(f"{receiver.url}?secret={secret}", dead_letter_path, fake_clock, count=3)
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        assert verify(request.headers, request.body, secret) > 0
        with pytest.raises(SignatureError, match="does not match"):
            verify(request.headers, request.body.replace(b'"size":3', b'"size":4'), secret)
        with pytest.raises(SignatureError):
            verify(request.headers, request.body, "another-secret")
    assert secret not in repr(notifier) and secret not in repr(notifier.transports["http"])


async def test_signed_batch_and_binary_requests_verify(receiver: Receiver, dead_letter_path: Path,
                                                       fake_clock: FakeClock) -> None:
    await emit(f"{receiver.url}?secret=k1&batch=true", dead_letter_path, fake_clock, count=2)
    await emit(f"{receiver.url}?secret=k1&mode=binary", dead_letter_path, fake_clock)
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        verify(request.headers, request.body, "k1")
    # In binary mode the attributes live in ce-* headers: forging one breaks the signature.
    binary = receiver.requests[1]
    assert binary.headers["ce-type"] == "backup.create.end"
    with pytest.raises(SignatureError, match="does not match"):
        verify({**binary.headers, "ce-type": "backup.delete.end"}, binary.body, "k1")


async def test_key_rotation_signs_with_every_secret(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    await emit(f"{receiver.url}?secret=old,key&secret=new-key", dead_letter_path, fake_clock)
    (request,) = receiver.requests
    assert request.headers[SIGNATURE_HEADER.lower()].count("v1=") == 2
    verify(request.headers, request.body, "old,key")  # a comma inside a secret is kept
    verify(request.headers, request.body, "new-key")


async def test_url_credentials_become_basic_auth(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = receiver.url.replace("http://", "http://metering:pa55word@")
    _, notifier = await emit(url, dead_letter_path, fake_clock)
    (request,) = receiver.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"metering:pa55word").decode()
    assert "pa55word" not in repr(notifier.transports["http"])


async def test_large_bodies_are_signed_too(receiver: Receiver, dead_letter_path: Path, fake_clock: FakeClock) -> None:
    # Over SIGN_INLINE_MAX_BYTES the HMAC is computed in a worker thread; same signature scheme.
    notifier = Notifier.from_url(f"{receiver.url}?secret=k2", publisher_id="p", dead_letters=dead_letter_path,
                                 clock=fake_clock)
    async with notifier:
        n = await notifier.info(CTX, "backup.create.end", {"blob": "x" * 100_000})
    (request,) = receiver.requests
    assert len(request.body) > 100_000 and request.body == n.encode("cloudevents")
    verify(request.headers, request.body, "k2")
