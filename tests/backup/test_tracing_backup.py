"""OpenTelemetry spans of the backup operations (backup/_tracing.py), recorded by the SDK's
in-memory exporter (the ``otel_spans`` fixture of tests/conftest.py): one span per operation
with the backup's attributes, the chunk pipeline's stages as child spans, an error status and
exception event on failure, and the notifications an operation emits in its trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit import Notification
from notifykit.backup import BackupNotFoundError, ObjectStoreError
from notifykit.backup._reset import reset_status
from notifykit.backup._tracing import describe, timed, timed_async
from notifykit.backup._verify import verify_backup

from .helpers import CHUNK, CTX, FullStore, backup_env

trace = pytest.importorskip("opentelemetry.trace")

pytestmark = pytest.mark.asyncio

VOLUME = 10 * CHUNK


def spans_named(exporter: Any, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one_span(exporter: Any, name: str) -> Any:
    [span] = spans_named(exporter, name)
    return span


def stages_of(exporter: Any, parent: Any) -> dict[str, Any]:
    """The stage spans whose parent is ``parent``, by stage name."""
    return {s.attributes["notifykit.backup.stage"]: s for s in exporter.get_finished_spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
            and "notifykit.backup.stage" in s.attributes}


def trace_id_of(notification: Notification) -> int:
    traceparent = notification.context.traceparent
    assert traceparent is not None, f"{notification.event_type} has no traceparent"
    return int(traceparent.split("-")[1], 16)


async def test_untraced_operations_cost_no_wrapper_and_make_no_spans(tmp_path: Path) -> None:
    """No provider set: the stage hooks hand back the very function, and notifications get
    no traceparent of ours."""
    def work() -> int:
        return 1

    async def work_async() -> int:
        return 2

    assert timed("read", work) is work
    assert timed_async("store", work_async) is work_async
    describe(object())  # outside an operation: nothing to describe, no error
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(VOLUME), ctx=CTX)
    assert record.status.value == "available"
    assert all(n.context.traceparent is None for n in env.memory.messages)


async def test_create_span_its_stages_and_the_notifications_in_its_trace(tmp_path: Path, otel_spans: Any) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(VOLUME), name="nightly", ctx=CTX)
    create = one_span(otel_spans, "backup.create")
    assert create.kind is trace.SpanKind.INTERNAL
    assert create.status.status_code is not trace.StatusCode.ERROR
    attributes = dict(create.attributes)
    assert attributes["notifykit.backup.operation"] == "create"
    assert attributes["notifykit.backup.id"] == record.id
    assert attributes["notifykit.backup.volume_id"] == record.volume_id
    assert attributes["notifykit.backup.size_bytes"] == VOLUME
    assert attributes["notifykit.backup.store_kind"] == record.store_kind == env.service.driver.store_identity[0]
    assert attributes["notifykit.backup.status"] == "available"
    assert attributes["notifykit.backup.object_count"] == record.object_count == 10

    stages = stages_of(otel_spans, create)
    assert list(stages) == ["read", "pack", "store", "metadata"]  # in the order they started
    assert [s.name for s in stages.values()] == [f"backup.create.{s}" for s in stages]
    assert stages["read"].attributes["notifykit.backup.stage.calls"] >= 10
    assert stages["pack"].attributes["notifykit.backup.stage.calls"] == 10
    assert stages["store"].attributes["notifykit.backup.stage.calls"] == 10
    assert stages["metadata"].attributes["notifykit.backup.stage.calls"] == 2  # block list and metadata objects
    for stage in stages.values():
        assert stage.context.trace_id == create.context.trace_id
        assert create.start_time <= stage.start_time <= stage.end_time <= create.end_time
        assert stage.attributes["notifykit.backup.stage.busy_s"] > 0

    # Every notification of the create is in its trace: the create span was current when it
    # was emitted, so the Notifier's own create span is its child and gives the traceparent.
    assert env.memory.messages[0].event_type == "backup.create.start"
    assert env.memory.messages[-1].event_type == "backup.create.end"
    notify_spans = {s.context.span_id: s for s in otel_spans.get_finished_spans() if s.name.startswith("create ")}
    for note in env.memory.messages:
        assert trace_id_of(note) == create.context.trace_id
        span_id = int(str(note.context.traceparent).split("-")[2], 16)
        assert notify_spans[span_id].parent.span_id == create.context.span_id


async def test_restore_verify_reset_delete_spans(tmp_path: Path, otel_spans: Any) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(VOLUME), ctx=CTX)
        await env.service.restore_backup(record.id, tmp_path / "restored.img", ctx=CTX)
        report = await verify_backup(env.service, record.id)
        await reset_status(env.service, record.id, "available", user="operator")
        await env.service.delete_backup(record.id, ctx=CTX)
    for name, stages in (("restore", ["metadata", "fetch", "write"]), ("verify", ["metadata", "fetch", "check"]),
                         ("reset_status", ["metadata", "fetch", "check"]), ("delete", [])):
        span = one_span(otel_spans, f"backup.{name}")
        assert span.attributes["notifykit.backup.operation"] == name
        assert span.attributes["notifykit.backup.id"] == record.id, name
        assert span.attributes["notifykit.backup.volume_id"] == record.volume_id, name
        assert span.attributes["notifykit.backup.size_bytes"] == VOLUME, name
        assert span.status.status_code is not trace.StatusCode.ERROR, name
        assert list(stages_of(otel_spans, span)) == stages, name
    restore = one_span(otel_spans, "backup.restore")
    assert stages_of(otel_spans, restore)["write"].attributes["notifykit.backup.stage.calls"] == 10
    verify = one_span(otel_spans, "backup.verify")
    assert verify.attributes["notifykit.backup.verify.objects"] == report.objects == 10
    assert verify.attributes["notifykit.backup.verify.stored_bytes"] == report.stored_bytes
    assert one_span(otel_spans, "backup.delete").attributes["notifykit.backup.status"] == "deleted"
    # each operation's notifications are in its own trace
    traces = {name: one_span(otel_spans, f"backup.{name}").context.trace_id
              for name in ("create", "restore", "reset_status", "delete")}
    for note in env.memory.messages:
        assert trace_id_of(note) == traces[note.event_type.split(".")[1].removesuffix("progress")], note.event_type


async def test_a_failed_create_has_an_error_status_an_exception_event_and_its_backup_id(
        tmp_path: Path, otel_spans: Any) -> None:
    async with backup_env(tmp_path, store=FullStore(tmp_path / "store", room=3)) as env:
        with anyio.fail_after(10), pytest.raises(ObjectStoreError):
            await env.service.create_backup(env.volume(VOLUME), ctx=CTX)
        [record] = await env.service.list()
    create = one_span(otel_spans, "backup.create")
    assert create.status.status_code is trace.StatusCode.ERROR
    assert "no space left on device" in create.status.description
    assert create.attributes["notifykit.backup.id"] == record.id
    [event] = [e for e in create.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "notifykit.backup._errors.ObjectStoreFullError"
    assert "no space left on device" in event.attributes["exception.message"]
    assert "store" in stages_of(otel_spans, create)  # the stages that ran until the failure
    error = env.memory.messages[-1]
    assert error.event_type == "backup.create.error"
    assert trace_id_of(error) == create.context.trace_id


async def test_a_refused_restore_names_the_backup_asked_for(tmp_path: Path, otel_spans: Any) -> None:
    async with backup_env(tmp_path) as env:
        with pytest.raises(BackupNotFoundError):
            await env.service.restore_backup("no-such-backup", tmp_path / "restored.img", ctx=CTX)
    restore = one_span(otel_spans, "backup.restore")
    assert restore.attributes["notifykit.backup.id"] == "no-such-backup"
    assert restore.status.status_code is trace.StatusCode.ERROR
    [event] = [e for e in restore.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith(".BackupNotFoundError")
    [error] = env.memory.messages
    assert error.event_type == "backup.restore.error" and trace_id_of(error) == restore.context.trace_id
