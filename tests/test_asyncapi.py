"""notifykit.asyncapi: an event catalogue as an AsyncAPI 3.0 document, checked against the
AsyncAPI 3.0 JSON Schema (tests/fixtures/asyncapi, from the @asyncapi/specs package) and
against the bytes the wire formats really produce."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from notifykit import ConfigError, EventCatalogue, InvalidNotificationError, Notifier, TransportConfig, WireFormat
from notifykit.asyncapi import to_asyncapi_schema
from notifykit.testing import MemoryTransport

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "asyncapi"
ASYNCAPI_SCHEMA = json.loads((FIXTURES / "asyncapi-3.0.0.schema.json").read_text(encoding="utf-8"))
ASYNCAPI = jsonschema.Draft7Validator(ASYNCAPI_SCHEMA)

URLS = {
    "rabbit": "amqp://notifier:s3cret-pw@127.0.0.1:5672/prod?exchange=billing&topic=notifications&topic=audit",
    "kafka": "kafka://127.0.0.1:9092/?topic=events",
    "kafka1": "kafka://127.0.0.1:9092/?topic=events&topic_mode=single",
    "nats": "nats://tok:s3cret-token@127.0.0.1:4222/?subject=billing",
    "redis": "redis://:s3cret-pw@127.0.0.1:6379/0?stream=billing",
    "mqtt": "mqtt://127.0.0.1:1883/?topic=billing",
    "hook": "https://hooks.example.test/in/billing?secret=s3cret-hmac",
    "log": "log://stderr",
}


def asyncapi_errors(document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in ASYNCAPI.iter_errors(document)]


def catalogue() -> EventCatalogue:
    c = EventCatalogue("billing", "1.2", description="what billing emits")
    invoice = c.schema("invoice", {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object", "required": ["id"], "additionalProperties": False,
        "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}, "currency": {"type": "string"}},
        "dependentRequired": {"amount": ["currency"]},
    })
    c.event("billing.invoice.created", invoice, summary="an invoice was issued")
    c.event("billing.invoice.failed", {"allOf": [invoice, {"required": ["amount"]}]}, priority="error")
    return c


def document(**urls: str) -> dict[str, Any]:
    return catalogue().document([TransportConfig.from_url(u, name=n) for n, u in urls.items()], publisher_id="billing.h1")


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_document_is_valid_asyncapi_3() -> None:
    doc = document(**URLS)
    assert doc["asyncapi"] == "3.0.0"
    assert asyncapi_errors(doc) == []
    for ref in refs(doc):  # every reference points at something
        resolve(doc, ref)


@pytest.mark.parametrize("damage", ["publish action", "no info", "operation to an unknown field", "bad server"])
def test_the_asyncapi_schema_rejects_a_damaged_document(damage: str) -> None:
    """The shipped schema really checks: the same document, damaged, is refused."""
    doc = copy.deepcopy(document(**URLS))
    operation = next(iter(doc["operations"].values()))
    if damage == "publish action":
        operation["action"] = "publish"  # AsyncAPI 2's word; 3.0 has send/receive
    elif damage == "no info":
        del doc["info"]
    elif damage == "operation to an unknown field":
        operation["topic"] = "x"
    else:
        doc["servers"]["rabbit"]["protocol"] = 42
    assert asyncapi_errors(doc)


def test_channels_are_the_transports_addresses() -> None:
    doc = document(**URLS)
    addresses = {cid: ch["address"] for cid, ch in doc["channels"].items()}
    assert {a for c, a in addresses.items() if c.startswith("rabbit.")} == {
        "notifications.info", "notifications.error", "audit.info", "audit.error"}
    assert doc["channels"]["rabbit.audit.error"]["bindings"]["amqp"]["exchange"]["name"] == "billing"
    assert list(doc["channels"]["rabbit.notifications.error"]["messages"]) == ["billing.invoice.failed"]
    assert {a for c, a in addresses.items() if c.startswith("kafka.")} == {"events.info", "events.error"}
    assert addresses["kafka1.events"] == "events"
    assert {a for c, a in addresses.items() if c.startswith("nats.")} == {
        "billing.billing.invoice.created", "billing.billing.invoice.failed"}
    assert addresses["redis.billing"] == "billing"
    assert {a for c, a in addresses.items() if c.startswith("mqtt.")} == {
        "billing/info/billing.invoice.created", "billing/error/billing.invoice.failed"}
    assert addresses["hook._in_billing"] == "/in/billing"
    assert doc["operations"]["send.hook._in_billing"]["bindings"]["http"]["method"] == "POST"
    assert addresses["log"] is None and "log" not in doc.get("servers", {})
    assert doc["servers"]["rabbit"] == {"host": "127.0.0.1:5672", "protocol": "amqp",
                                        "description": "transport 'rabbit' (amqp://, oslo format)"}
    # each channel's messages are in the format its transport sends
    assert doc["channels"]["rabbit.audit.info"]["messages"]["billing.invoice.created"]["$ref"].endswith(".oslo")
    assert doc["channels"]["hook._in_billing"]["messages"]["billing.invoice.created"]["$ref"].endswith(".cloudevents")


def test_no_secret_of_a_url_reaches_the_document() -> None:
    text = json.dumps(document(**URLS))
    assert "s3cret" not in text and "notifier:" not in text


def test_a_transport_a_notifier_would_refuse_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        document(rabbit="amqp://127.0.0.1/?exchang=typo")


def test_payload_schemas_are_written_in_asyncapis_draft_07() -> None:
    doc = document()
    invoice = doc["components"]["schemas"]["invoice"]
    assert "$schema" not in invoice and invoice["dependencies"] == {"amount": ["currency"]}
    assert "dependentRequired" not in json.dumps(doc)
    assert to_asyncapi_schema({"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
                              "#/components/schemas/s") == {
        "definitions": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/components/schemas/s/definitions/a"}}}
    with pytest.raises(ConfigError, match="prefixItems"):
        to_asyncapi_schema({"prefixItems": [{"type": "string"}]}, "#/x")


def test_validate_checks_a_payload_against_its_event_type() -> None:
    c = catalogue()
    c.validate("billing.invoice.created", {"id": "i1"})
    c.validate("billing.invoice.failed", {"id": "i1", "amount": 5, "currency": "EUR"})
    with pytest.raises(InvalidNotificationError, match="'currency' is a dependency of 'amount'"):
        c.validate("billing.invoice.created", {"id": "i1", "amount": 5})
    with pytest.raises(InvalidNotificationError, match="'amount' is a required property"):
        c.validate("billing.invoice.failed", {"id": "i1"})
    with pytest.raises(InvalidNotificationError, match="not in catalogue"):
        c.validate("billing.invoice.lost", {"id": "i1"})
    with pytest.raises(ConfigError, match="declared twice"):
        c.event("billing.invoice.created", {})


def message_validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft7Validator:
    """A validator of one schema of the document, its references resolved within the document."""
    return jsonschema.Draft7Validator({**doc, "$ref": pointer})


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", list(WireFormat))
async def test_the_wire_bytes_match_the_documented_message(fmt: WireFormat, tmp_path: Path) -> None:
    url = f"memory://?format={fmt.value}"
    doc = catalogue().document([TransportConfig.from_url(url)])
    async with Notifier.from_url(url, publisher_id="billing.h1", dead_letters=tmp_path / "dl.jsonl") as n:
        await n.info({"request_id": "r1", "user_id": "u1"}, "billing.invoice.created", {"id": "i1"})
        await n.error({}, "billing.invoice.failed", {"id": "i2", "amount": 3, "currency": "EUR"})
        await n.info({}, "billing.invoice.created", {"id": 7})  # not what the catalogue says
    memory = n.transports["memory"]
    assert isinstance(memory, MemoryTransport)
    results = []
    for notification in memory.messages:
        key = f"#/components/messages/{notification.event_type}.{fmt.value}/payload"
        body = json.loads(fmt.serialise(notification))
        valid = message_validator(doc, key).is_valid(body)
        if fmt is WireFormat.OSLO:  # the envelope's string holds the message its x-oslo-message describes
            valid = valid and message_validator(doc, key + "/x-oslo-message").is_valid(json.loads(body["oslo.message"]))
        results.append(valid)
    assert results == [True, True, False]
