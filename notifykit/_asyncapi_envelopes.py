"""The AsyncAPI message of an event type in each wire format: what a consumer really reads.

``json`` is the notification itself, ``cloudevents`` the CloudEvents 1.0 structured event
with the payload as ``data``, and ``oslo`` oslo.messaging's messagingv2 envelope, whose
``oslo.message`` is the JSON *text* of the inner message: its schema is given beside it as
``x-oslo-message`` (draft-07 cannot describe the content of a string).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._event_type import EventType
from ._formats import WireFormat

__all__ = ["CONTEXT", "envelope_schemas", "message"]

CONTEXT = "notifykit.context"
_TEXT = {"type": "string"}
_DATE_TIME = {"type": "string", "format": "date-time"}
#: str(datetime) as oslo writes it: UTC, a space, microseconds, no offset.
_OSLO_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$"}


def envelope_schemas(formats: Iterable[WireFormat]) -> dict[str, Any]:
    """The shared component schemas the envelopes of ``formats`` refer to."""
    del formats  # every format carries the context in some form; one schema describes it
    return {CONTEXT: {
        "type": "object",
        "description": "The request context: request_id (generated when the caller gives none), user_id,"
                       " project_id, traceparent (W3C trace context) and any other field the caller set.",
        "properties": {k: dict(_TEXT) for k in ("request_id", "user_id", "project_id", "traceparent")},
    }}


def _ref(event: EventType, suffix: str = "payload") -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{event.key}.{suffix}"}


def envelope(event: EventType, fmt: WireFormat) -> dict[str, Any]:
    """The JSON Schema of the bytes a transport sends for ``event`` in ``fmt``."""
    if fmt is WireFormat.OSLO:
        return {
            "type": "object", "required": ["oslo.version", "oslo.message"], "additionalProperties": False,
            "properties": {
                "oslo.version": {"const": "2.0"},
                "oslo.message": {"type": "string", "contentMediaType": "application/json",
                                 "description": "The JSON text of the message; its schema is x-oslo-message."},
            },
            "x-oslo-message": oslo_message(event),
        }
    if fmt is WireFormat.CLOUDEVENTS:
        return {
            "type": "object", "additionalProperties": False,
            "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "priority", "data"],
            "properties": {
                "specversion": {"const": "1.0"}, "id": dict(_TEXT),
                "source": {"type": "string", "description": "the publisher_id"},
                "type": {"const": event.name}, "time": dict(_DATE_TIME),
                "datacontenttype": {"const": "application/json"}, "priority": {"const": event.priority.value},
                **{k: {"type": "string", "description": f"context {k}"} for k in ("requestid", "userid", "projectid")},
                "traceparent": {"type": "string", "description": "W3C trace context"},
                "data": _ref(event),
            },
        }
    return {
        "type": "object", "additionalProperties": False,
        "required": ["message_id", "event_type", "priority", "publisher_id", "timestamp", "context", "payload"],
        "properties": {
            "message_id": {"type": "string", "description": "unique per notification; kept by retries and replays"},
            "event_type": {"const": event.name}, "priority": {"const": event.priority.value},
            "publisher_id": dict(_TEXT), "timestamp": dict(_DATE_TIME),
            "context": {"$ref": f"#/components/schemas/{CONTEXT}"}, "payload": _ref(event),
        },
    }


def oslo_message(event: EventType) -> dict[str, Any]:
    """The inner message of the oslo envelope (what ``json.loads(body["oslo.message"])`` gives)."""
    return {
        "type": "object", "additionalProperties": False,
        "required": ["message_id", "publisher_id", "event_type", "priority", "timestamp", "payload"],
        "properties": {
            "message_id": dict(_TEXT), "publisher_id": dict(_TEXT), "event_type": {"const": event.name},
            "priority": {"const": event.priority.value.upper()}, "timestamp": dict(_OSLO_TIME),
            "_unique_id": {"type": "string", "description": "the message_id without dashes (oslo's rabbit driver)"},
            "payload": _ref(event),
        },
        "patternProperties": {"^_context_": {"description": "a context field, as oslo's _context_<name>"}},
    }


def message(event: EventType, fmt: WireFormat, publisher_id: str | None) -> dict[str, Any]:
    """The AsyncAPI Message Object of ``event`` in ``fmt``."""
    msg: dict[str, Any] = {
        "name": event.name,
        "title": f"{event.name} ({fmt.value})",
        "summary": event.summary or event.name,
        "contentType": fmt.content_type,
        "payload": envelope(event, fmt),
        "tags": [{"name": fmt.value}, {"name": event.priority.value}],
        "x-notifykit-priority": event.priority.value,
    }
    if event.description:
        msg["description"] = event.description
    if publisher_id:
        msg["x-notifykit-publisher-id"] = publisher_id
    return msg
