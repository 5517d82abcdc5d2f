"""Wire formats, byte-checked against fixtures and decoded the way consumers do."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifykit import ConfigError, Notification, WireFormat
from notifykit.transport import decode_message

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def notification() -> Notification:
    return Notification.create(
        "backup.create.end",
        {"backup_id": "5f0c4b2e-1111-4222-8333-944455556666", "size": 2, "display_name": "nightly é"},
        priority="info",
        publisher_id="backup.host1",
        context={
            "request_id": "req-0b5e",
            "user_id": "u-1",
            "project_id": "p-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        message_id="9d3f4a8e-5b1c-4e2a-9f00-1234567890ab",
        timestamp=datetime(2026, 11, 25, 12, 30, 45, 123456, tzinfo=UTC),
    )


@pytest.mark.parametrize("fmt", ["oslo", "cloudevents", "json"])
def test_bytes_match_fixture(notification: Notification, fmt: str) -> None:
    expected = (FIXTURES / f"notification.{fmt}.json").read_bytes().rstrip(b"\n")
    assert notification.encode(fmt) == expected


def test_oslo_envelope_is_messagingv2(notification: Notification) -> None:
    envelope = json.loads(notification.encode(WireFormat.OSLO))
    assert set(envelope) == {"oslo.version", "oslo.message"}
    assert envelope["oslo.version"] == "2.0"
    inner = json.loads(envelope["oslo.message"])
    assert inner["priority"] == "INFO"
    assert inner["event_type"] == "backup.create.end"
    assert inner["publisher_id"] == "backup.host1"
    assert inner["message_id"] == notification.message_id
    assert inner["timestamp"] == "2026-11-25 12:30:45.123456"
    assert inner["_context_request_id"] == "req-0b5e"
    assert inner["_context_project_id"] == "p-1"
    assert inner["payload"]["display_name"] == "nightly é"


def test_cloudevents_required_attributes(notification: Notification) -> None:
    event = json.loads(notification.encode(WireFormat.CLOUDEVENTS))
    assert event["specversion"] == "1.0"
    assert event["id"] == notification.message_id
    assert event["type"] == "backup.create.end"
    assert event["source"] == "backup.host1"
    assert event["time"] == "2026-11-25T12:30:45.123456Z"
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["size"] == 2
    assert event["traceparent"].startswith("00-0af7")
    assert WireFormat.CLOUDEVENTS.content_type == "application/cloudevents+json"


def test_json_is_the_plain_message(notification: Notification) -> None:
    message = json.loads(notification.encode("json"))
    assert message["timestamp"] == "2026-11-25T12:30:45.123456+00:00"
    assert message["priority"] == "info"
    assert message["context"]["user_id"] == "u-1"
    assert message["payload"] == notification.payload


def test_unknown_format() -> None:
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        WireFormat.parse("xml")


@pytest.mark.parametrize("fmt", ["oslo", "cloudevents", "json"])
def test_decode_round_trip(notification: Notification, fmt: str) -> None:
    decoded = decode_message(notification.encode(fmt))
    assert decoded["format"] == fmt
    assert decoded["message_id"] == notification.message_id
    assert decoded["event_type"] == "backup.create.end"
    assert decoded["priority"] == "info"
    assert decoded["publisher_id"] == "backup.host1"
    assert decoded["payload"] == notification.payload
    assert decoded["context"]["request_id"] == "req-0b5e"


def test_decode_rejects_foreign_json() -> None:
    with pytest.raises(ValueError, match="neither"):
        decode_message(b'{"hello": 1}')
