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
