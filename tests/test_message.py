"""Notification model: validation at the call site, priorities, context."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifykit import InvalidNotificationError, Notification, Priority, RequestContext


def make(**kwargs: object) -> Notification:
    args: dict[str, object] = {"publisher_id": "test.host"}
    args.update(kwargs)
    event_type = args.pop("event_type", "backup.create.start")
    payload = args.pop("payload", {"a": 1})
    return Notification.create(event_type, payload, **args)  # type: ignore[arg-type]


def test_defaults_are_filled() -> None:
    n = make()
    assert len(n.message_id) == 36 and n.message_id.count("-") == 4
    assert n.priority is Priority.INFO
    assert n.timestamp.tzinfo is UTC
    assert n.payload_json == '{"a":1}'
    assert n.iso_timestamp.endswith("+00:00") and "." in n.iso_timestamp


def test_message_ids_are_unique() -> None:
    assert len({make().message_id for _ in range(1000)}) == 1000


def test_message_ids_are_rfc_4122_version_4_uuids() -> None:
    import uuid

    from notifykit._message import new_message_id

    for _ in range(2000):  # several pools of random digits
        text = new_message_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


@pytest.mark.parametrize("bad", ["", "backup..create", ".backup", "backup create", "backup.create.", 42, "a" * 256])
def test_bad_event_type_is_one_clear_error(bad: object) -> None:
    with pytest.raises(InvalidNotificationError, match="event_type"):
        make(event_type=bad)


def test_unserialisable_payload_names_the_field() -> None:
    with pytest.raises(InvalidNotificationError, match=r"payload\.volume\.created is of type datetime"):
        make(payload={"volume": {"created": datetime.now(UTC)}})


def test_nan_payload_rejected() -> None:
    with pytest.raises(InvalidNotificationError, match="JSON cannot represent"):
        make(payload={"ratio": float("nan")})


def test_payload_must_be_an_object() -> None:
    with pytest.raises(InvalidNotificationError, match="JSON object"):
        make(payload=[1, 2, 3])


def test_oversize_payload_rejected_with_sizes() -> None:
    with pytest.raises(InvalidNotificationError, match=r"over the limit of 100 bytes"):
        make(payload={"blob": "x" * 200}, max_payload_bytes=100)


def test_size_limit_counts_utf8_bytes() -> None:
    make(payload={"s": "é" * 10}, max_payload_bytes=40)
    with pytest.raises(InvalidNotificationError):
        make(payload={"s": "é" * 20}, max_payload_bytes=40)


def test_priority_parse() -> None:
    assert Priority.parse("WARNING") is Priority.WARN
    assert Priority.parse("Error") is Priority.ERROR
    assert Priority.DEBUG.level < Priority.INFO.level < Priority.WARN.level < Priority.CRITICAL.level
    with pytest.raises(InvalidNotificationError, match="unknown priority 'loud'"):
        Priority.parse("loud")


def test_context_from_mapping_keeps_extra_keys() -> None:
    ctx = RequestContext.coerce({"request_id": "r", "user_id": "u", "tenant": "p", "is_admin": False})
    assert ctx.project_id == "p"
    assert ctx.as_dict() == {"request_id": "r", "user_id": "u", "project_id": "p", "is_admin": False}


def test_empty_context_is_fine() -> None:
    assert make(context={}).context.as_dict() == {}


def test_bad_traceparent_rejected() -> None:
    with pytest.raises(InvalidNotificationError, match="traceparent"):
        make(context={"traceparent": "nope"})


def test_context_must_be_mapping() -> None:
    with pytest.raises(InvalidNotificationError, match="context must be a mapping"):
        make(context=["x"])


def test_naive_timestamp_rejected() -> None:
    with pytest.raises(InvalidNotificationError, match="timezone-aware"):
        make(timestamp=datetime(2026, 1, 1))


def test_encoding_is_cached_per_format() -> None:
    n = make()
    assert n.encode("oslo") is n.encode("oslo")
    assert n.encode("json") is not n.encode("oslo")


@pytest.mark.filterwarnings("ignore:Using fork:DeprecationWarning")  # eventlet (oslo.messaging) warns on any fork
def test_message_ids_are_uuid4_and_differ_across_fork() -> None:
    import os
    import uuid

    from notifykit._message import new_message_id

    parent_first = new_message_id()  # fills the random pool before forking
    assert uuid.UUID(parent_first).version == 4
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: ids from its own pool
        os.write(write, " ".join(new_message_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = set(os.read(read, 1 << 16).decode().split())
    os.waitpid(pid, 0)
    parent = {new_message_id() for _ in range(50)}
    assert len(child) == 50 and not child & parent


# -- the same rules for payload, context and publisher_id (issue 13, reproductions 7 and 8) --

def nested(depth: int) -> dict[str, object]:
    root: dict[str, object] = {}
    node = root
    for _ in range(depth - 1):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    return root


@pytest.mark.parametrize(("context", "message"), [
    ({"request_id": "r-\ud800"}, r"context\.request_id contains a lone surrogate '\\ud800' at index 2"),
    ({"note": "x\udfff"}, r"context\.note contains a lone surrogate"),
    ({"k\ud800": "v"}, r"context has a key that contains a lone surrogate"),
    ({"deep": nested(200)}, r"nested deeper than 100 levels"),
    ({"user_id": 5}, r"context field 'user_id' must be a string"),
    (RequestContext(request_id=5), r"context field 'request_id' must be a string, not int"),  # type: ignore[arg-type]
    (RequestContext(extra={"when": datetime.now(UTC)}), r"context\.when is of type datetime"),
])
def test_context_follows_the_payload_rules(context: object, message: str) -> None:
    with pytest.raises(InvalidNotificationError, match=message):
        make(context=context)


def test_circular_context_and_payload_are_named() -> None:
    loop: dict[str, object] = {"x": 1}
    loop["self"] = loop
    with pytest.raises(InvalidNotificationError, match=r"payload\.self is a circular reference"):
        make(payload=loop)
    with pytest.raises(InvalidNotificationError, match=r"context\.loop\.self is a circular reference"):
        make(context={"loop": loop})
    items: list[object] = []
    items.append(items)
    with pytest.raises(InvalidNotificationError, match=r"payload\.items\[0\] is a circular reference"):
        make(payload={"items": items})


@pytest.mark.parametrize("depth", [101, 100_000])
def test_deep_payload_is_a_clear_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(InvalidNotificationError, match=r"payload\.a\.a.*is nested deeper than 100 levels"):
        make(payload=nested(depth))


def test_deep_list_payload_is_a_clear_error() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(InvalidNotificationError, match=r"payload\.l\[0\]\[0\].*nested deeper than 100 levels"):
        make(payload={"l": deep})


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert make(payload=nested(100)).payload_json.count("{") == 100
    assert make(payload={"many": [{"i": i} for i in range(500)]})  # many brackets, shallow


@pytest.mark.parametrize(("payload", "message"), [
    ({"name": "vol-\udc80"}, r"payload\.name contains a lone surrogate '\\udc80' at index 4"),
    ({"tags": ["ok", "\ud83d"]}, r"payload\.tags\[1\] contains a lone surrogate"),
    ({"k\udc80": 1}, r"payload has a key that contains a lone surrogate"),
    ({"meta": {(1, 2): "tuple key"}}, r"payload\.meta has a key of type tuple"),
])
def test_payload_that_utf8_or_json_cannot_carry_is_named(payload: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidNotificationError, match=message):
        make(payload=payload)


def test_non_ascii_text_is_fine() -> None:
    assert make(payload={"name": "Größe 😀"}, context={"note": "日本"}).payload_json == '{"name":"Größe 😀"}'


@pytest.mark.parametrize("bad", ["a.b\n", "a.b\n\n", "\na.b"])
def test_event_type_with_a_trailing_newline_is_refused(bad: str) -> None:
    with pytest.raises(InvalidNotificationError, match="invalid event_type"):
        make(event_type=bad)


@pytest.mark.parametrize(("publisher_id", "message"), [
    (123, "publisher_id must be a string, not int"),
    (None, "publisher_id must be a string, not NoneType"),
    ("", "invalid publisher_id ''"),
    ("backup.\ud800", r"invalid publisher_id 'backup\.\\ud800': a lone surrogate at index 7"),
    ("backup.h\n", "invalid publisher_id"),
    ("x" * 256, "invalid publisher_id"),
])
def test_publisher_id_is_validated(publisher_id: object, message: str) -> None:
    with pytest.raises(InvalidNotificationError, match=message):
        make(publisher_id=publisher_id)


def test_context_counts_toward_the_size_cap() -> None:
    make(payload={"a": 1}, context={"request_id": "r" * 50}, max_payload_bytes=100)
    with pytest.raises(InvalidNotificationError,
                       match=r"payload and context are \d+ bytes encoded \(7 \+ \d+\), over the limit of 100 bytes"):
        make(payload={"a": 1}, context={"request_id": "r" * 100}, max_payload_bytes=100)


def test_a_20_mb_context_is_refused_by_the_default_cap() -> None:
    with pytest.raises(InvalidNotificationError, match=r"over the limit of 1048576 bytes"):
        make(context={"blob": "x" * 20_000_000})
    with pytest.raises(InvalidNotificationError, match=r"over the limit of 1048576 bytes"):
        make(context={"request_id": "x" * 20_000_000})  # twice: a refused context is not cached
    with pytest.raises(InvalidNotificationError, match=r"over the limit of 1048576 bytes"):
        make(context={"request_id": "x" * 20_000_000})
