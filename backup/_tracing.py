"""OpenTelemetry spans for the backup operations, when the application set a tracer provider.

opentelemetry-api is optional (``notifykit[otel]``) and looked up only when an operation
starts: without the package, or with no tracer provider set (the API's default proxy),
:func:`traced` runs the operation as it is and :func:`timed` hands back the function it was
given, so an untraced backup pays one context-variable read per chunk and stage.

With a provider, each operation is one span ``backup.<operation>`` (``create``, ``restore``,
``delete``, ``verify``, ``reset_status``), current while it runs, so the notifications it
emits are its children and carry its trace in their ``traceparent``. The backup's id, volume
id, size and store kind are its attributes; a failure sets an error status and records the
exception. The chunk pipeline's stages (read, pack = hash and compress, store, metadata on a
create; metadata, fetch, write on a restore; metadata, fetch, check on a verify) run
concurrently and once per chunk, so each is summed into one child span
``backup.<operation>.<stage>`` from its first call's start to its last call's end, with the
number of calls and the time spent in them (``busy_s``, more than the span's length when
several workers ran it at once).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from notifykit import redact_text

from ._errors import describe_failure  # the fail_reason the catalog records, redacted

__all__ = ["describe", "timed", "timed_async", "traced"]

P = ParamSpec("P")
R = TypeVar("R")

TRACER_NAME = "notifykit.backup"
_NO_PROVIDER = ("ProxyTracerProvider", "NoOpTracerProvider")

_missing = False  # opentelemetry-api is not installed: looked up once per process


def _trace_api() -> Any | None:
    """``opentelemetry.trace`` when it is installed and a tracer provider is set, else None."""
    global _missing
    if _missing:
        return None
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        _missing = True
        return None
    if type(trace.get_tracer_provider()).__name__ in _NO_PROVIDER:
        return None
    return trace


class _Stage:
    """One pipeline stage's calls, summed."""

    __slots__ = ("busy_ns", "calls", "first_ns", "last_ns")

    def __init__(self, start_ns: int) -> None:
        self.calls = 0
        self.busy_ns = 0
        self.first_ns = start_ns
        self.last_ns = start_ns


class _Operation:
    """The span of one running operation and its stages (added to from worker threads)."""

    def __init__(self, name: str, span: Any) -> None:
        self.name = name
        self.span = span
        self.stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, start_ns: int, end_ns: int) -> None:
        with self._lock:
            totals = self.stages.get(stage)
            if totals is None:
                totals = self.stages[stage] = _Stage(start_ns)
            totals.calls += 1
            totals.busy_ns += end_ns - start_ns
            totals.first_ns = min(totals.first_ns, start_ns)
            totals.last_ns = max(totals.last_ns, end_ns)

    def end_stages(self, trace: Any, tracer: Any) -> None:
        """One child span per stage, in the order the stages started."""
        parent = trace.set_span_in_context(self.span)
        with self._lock:
            stages = sorted(self.stages.items(), key=lambda item: item[1].first_ns)
        for stage, totals in stages:
            child = tracer.start_span(f"backup.{self.name}.{stage}", context=parent, start_time=totals.first_ns,
                                      attributes={"notifykit.backup.stage": stage,
                                                  "notifykit.backup.stage.calls": totals.calls,
                                                  "notifykit.backup.stage.busy_s": totals.busy_ns / 1e9})
            child.end(end_time=totals.last_ns)

    def failed(self, trace: Any, exc: BaseException) -> None:
        reason = redact_text(describe_failure(exc))
        self.span.record_exception(exc, attributes={"exception.message": redact_text(str(exc)) or reason})
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, reason))


_OPERATION: ContextVar[_Operation | None] = ContextVar("notifykit_backup_operation", default=None)


def traced(operation: str, result: Callable[[Any], Mapping[str, Any]] | None = None,
           ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run the decorated operation in a span ``backup.<operation>`` when tracing is on.

    Its ``backup_id`` / ``volume_id`` arguments, when given, are attributes from the start;
    the record it returns (or ``result(value)``, when given) adds the rest."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            trace = _trace_api()
            if trace is None:
                return await fn(*args, **kwargs)
            arguments = signature.bind_partial(*args, **kwargs).arguments
            attributes: dict[str, Any] = {"notifykit.backup.operation": operation}
            for name in ("backup_id", "volume_id"):
                if isinstance(arguments.get(name), str):
                    attributes[f"notifykit.backup.{name.removeprefix('backup_')}"] = arguments[name]
            tracer = trace.get_tracer(TRACER_NAME)
            with tracer.start_as_current_span(f"backup.{operation}", attributes=attributes, record_exception=False,
                                              set_status_on_exception=False) as span:
                op = _Operation(operation, span)
                token = _OPERATION.set(op)
                try:
                    value = await fn(*args, **kwargs)
                except BaseException as exc:
                    op.failed(trace, exc)
                    raise
                finally:
                    _OPERATION.reset(token)
                    op.end_stages(trace, tracer)
                if result is not None:
                    span.set_attributes(dict(result(value)))
                else:
                    _describe(span, value)
                return value

        return run

    return decorate


def describe(record: Any) -> None:
    """Put a backup record's id, volume, size and store on the running operation's span."""
    op = _OPERATION.get()
    if op is not None:
        _describe(op.span, record)


def _describe(span: Any, record: Any) -> None:
    if not hasattr(record, "volume_id") or not hasattr(record, "status"):
        return  # not a BackupRecord
    attributes = {"notifykit.backup.id": record.id, "notifykit.backup.volume_id": record.volume_id,
                  "notifykit.backup.size_bytes": record.size_bytes, "notifykit.backup.status": record.status.value,
                  "notifykit.backup.store_kind": record.store_kind, "notifykit.backup.parent_id": record.parent_id,
                  "notifykit.backup.object_count": record.object_count}
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})


def timed(stage: str, fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, its calls summed into ``stage`` of the running operation's span (for a call in a
    worker thread: wrap it here, in the task, where the operation is known)."""
    op = _OPERATION.get()
    if op is None:
        return fn

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            op.add(stage, start, time.time_ns())

    return run


def timed_async(stage: str, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """:func:`timed` for a coroutine function."""
    op = _OPERATION.get()
    if op is None:
        return fn

    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.time_ns()
        try:
            return await fn(*args, **kwargs)
        finally:
            op.add(stage, start, time.time_ns())

    return run
