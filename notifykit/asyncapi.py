"""An application's notifications as an AsyncAPI 3.0 document: its event catalogue, the
envelope of each wire format, and the channels its configured transports publish to.

An application declares its event types once, with the JSON Schema of their payloads::

    catalogue = EventCatalogue("billing notifications", "1.0")
    invoice = catalogue.schema("invoice", {"type": "object", "required": ["id"], ...})
    catalogue.event("billing.invoice.created", invoice, summary="an invoice was issued")
    document = catalogue.document([TransportConfig.from_url("amqp://rabbit/")])

Consumers then read the document (or a renderer of it) rather than the sender's code. The
payload schemas may use JSON Schema 2020-12's ``dependentRequired``; they are written in
AsyncAPI's own schema dialect (JSON Schema draft-07) in the document. ``validate`` checks
a payload against its event type (it needs ``jsonschema``, imported only then).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ._asyncapi_envelopes import envelope_schemas, message
from ._channels import Destination, destination, transport_name
from ._config import TransportConfig
from ._errors import ConfigError, InvalidNotificationError, MissingDependencyError
from ._event_type import EventType, component_key
from ._formats import WireFormat
from ._message import Priority

__all__ = ["ASYNCAPI_VERSION", "EventCatalogue", "EventType", "to_asyncapi_schema"]

ASYNCAPI_VERSION = "3.0.0"
#: JSON Schema 2019-09/2020-12 keywords draft-07 has no way to say; refused rather than dropped.
_UNSUPPORTED = ("prefixItems", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$dynamicAnchor",
                "$recursiveRef", "$anchor", "contentSchema", "minContains", "maxContains")


class EventCatalogue:
    """The event types an application emits, and the payload schemas they share."""

    def __init__(self, title: str, version: str, *, description: str = "") -> None:
        self.title = title
        self.version = version
        self.description = description
        self._schemas: dict[str, dict[str, Any]] = {}
        self._events: dict[str, EventType] = {}

    def schema(self, name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Register a schema several event types share; returns the reference to use in them."""
        key = component_key(name)
        if key in self._schemas:
            raise ConfigError(f"schema {name!r} is declared twice in catalogue {self.title!r}")
        self._schemas[key] = to_asyncapi_schema(schema, f"#/components/schemas/{key}")
        return {"$ref": f"#/components/schemas/{key}"}

    def event(self, name: str, payload: Mapping[str, Any], *, priority: Priority | str = Priority.INFO,
              summary: str = "", description: str = "") -> EventType:
        """Declare an event type; ``payload`` is its JSON Schema (or a :meth:`schema` reference)."""
        if not name or name in self._events:
            raise ConfigError(f"event type {name!r} is {'declared twice' if name else 'empty'} in catalogue {self.title!r}")
        event = EventType(name, to_asyncapi_schema(payload, f"#/components/schemas/{component_key(name)}.payload"),
                          Priority.parse(priority), summary, description)
        self._events[name] = event
        return event

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._events.values())

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, name: object) -> bool:
        return name in self._events

    def __getitem__(self, name: str) -> EventType:
        return self._events[name]

    def validate(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Raise InvalidNotificationError unless ``payload`` matches ``event_type``'s schema
        (an event type not in the catalogue is an error too). Needs ``jsonschema``."""
        try:
            import jsonschema  # type: ignore[import-untyped]  # no stubs; only used here, lazily
        except ImportError as exc:
            raise MissingDependencyError("EventCatalogue.validate needs jsonschema: pip install jsonschema") from exc
        if event_type not in self._events:
            raise InvalidNotificationError(f"event type {event_type!r} is not in catalogue {self.title!r}")
        root = {"$ref": f"#/components/schemas/{self._events[event_type].key}.payload",
                "components": {"schemas": self._components()}}
        error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(root).iter_errors(dict(payload)))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            raise InvalidNotificationError(f"{event_type}: {where}: {error.message}")

    def _components(self) -> dict[str, Any]:
        schemas: dict[str, Any] = dict(self._schemas)
        schemas.update({f"{e.key}.payload": dict(e.payload) for e in self})
        return schemas

    def document(self, transports: Sequence[TransportConfig] = (), *, publisher_id: str | None = None,
                 formats: Sequence[WireFormat] = ()) -> dict[str, Any]:
        """The AsyncAPI 3.0 document: a message per event type and wire format, and per transport
        its server, one channel per address with the messages sent there, and a ``send``
        operation. ``formats`` adds messages of formats no transport uses (default: JSON
        when no transport is given). Raises ConfigError for a transport a Notifier would refuse."""
        taken: set[str] = set()
        destinations: list[Destination] = []
        for config in transports:
            name = transport_name(config, taken)
            taken.add(name)
            destinations.append(destination(name, config, [(e.name, e.priority) for e in self]))
        used = dict.fromkeys([*(d.format for d in destinations), *formats] or [WireFormat.JSON])
        components: dict[str, Any] = {"schemas": {**envelope_schemas(used), **self._components()}, "messages": {}}
        for event in self:
            for fmt in used:
                components["messages"][f"{event.key}.{fmt.value}"] = message(event, fmt, publisher_id)
        doc: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {"title": self.title, "version": self.version, "description": self.description or self.title},
            "defaultContentType": "application/json",
        }
        servers, channels, operations = _topology(destinations)
        if servers:
            doc["servers"] = servers
        doc.update(channels=channels, operations=operations, components=components)
        return doc


def _topology(destinations: Sequence[Destination]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    servers: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for dest in destinations:
        key = component_key(dest.name)
        if dest.protocol is not None and dest.host is not None:
            servers[key] = {"host": dest.host, "protocol": dest.protocol,
                            "description": f"transport {dest.name!r} ({dest.scheme}://, {dest.format.value} format)"}
            if dest.pathname:
                servers[key]["pathname"] = dest.pathname
        for route in dest.routes:
            cid = component_key(f"{dest.name}.{route.address}" if route.address else dest.name)
            channel: dict[str, Any] = {
                "address": route.address,
                "title": f"{dest.name}: {route.address or 'no fixed address'}",
                "description": f"What transport {dest.name!r} ({dest.scheme}://) sends"
                               + (f" to {route.address}." if route.address else "; its address is not known in advance."),
                "messages": {f"{component_key(e)}": {"$ref": f"#/components/messages/{component_key(e)}.{dest.format.value}"}
                             for e in route.events},
            }
            if key in servers:
                channel["servers"] = [{"$ref": f"#/servers/{key}"}]
            if route.bindings:
                channel["bindings"] = route.bindings
            channels[cid] = channel
            operation: dict[str, Any] = {
                "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"notifykit publishes through transport {dest.name!r}",
                "messages": [{"$ref": f"#/channels/{cid}/messages/{component_key(e)}"} for e in route.events],
            }
            if dest.operation_bindings:
                operation["bindings"] = dest.operation_bindings
            operations[f"send.{cid}"] = operation
    return servers, channels, operations


def to_asyncapi_schema(schema: Mapping[str, Any], base: str) -> dict[str, Any]:
    """``schema`` in AsyncAPI's schema dialect (JSON Schema draft-07), to be placed at JSON
    pointer ``base`` of the document: ``dependentRequired`` becomes ``dependencies``,
    ``$defs`` ``definitions``, local ``#/…`` references are rebased; ``$schema`` is dropped."""
    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        refused = [k for k in _UNSUPPORTED if k in node]
        if refused:
            raise ConfigError(f"payload schema at {base}: {', '.join(refused)} cannot be written as JSON Schema draft-07")
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$schema":
                continue
            if k == "$ref" and isinstance(v, str) and v.startswith("#/") and not v.startswith("#/components/"):
                out[k] = base + v[1:].replace("/$defs/", "/definitions/")
            elif k in ("dependentRequired", "dependentSchemas"):
                out.setdefault("dependencies", {}).update(convert(v))
            elif k == "$defs":
                out["definitions"] = convert(v)
            else:
                out[k] = convert(v)
        return out

    converted = convert(schema)
    assert isinstance(converted, dict)
    return converted
