"""``notifykit-backup --otel``: the OpenTelemetry SDK with an OTLP exporter, for one command.

The backup library only ever uses the application's tracer provider (``_tracing``); the
command line is its own application, so ``--otel`` (or ``NOTIFYKIT_BACKUP_OTEL=1``) sets one
up, configured the standard way from ``OTEL_*`` variables: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``..._TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default,
or ``grpc``), headers, timeout, certificates, ``OTEL_SERVICE_NAME`` (default
``notifykit-backup``), ``OTEL_RESOURCE_ATTRIBUTES``, the sampler and the batch processor's
settings. Spans are exported in batches in the background and the rest flushed when the
command ends; batches the collector did not take are counted in one warning line.

The SDK and the exporter are optional (``notifykit[otel-sdk]``) and imported only here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from notifykit import redact_text

from ._errors import BackupConfigError

__all__ = ["OTEL_ENV", "otel_export", "otel_wanted"]

OTEL_ENV = "NOTIFYKIT_BACKUP_OTEL"
INSTALL_HINT = "pip install 'notifykit[otel-sdk]'"
DEFAULT_SERVICE_NAME = "notifykit-backup"
_EXPORTERS = {"http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
              "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def otel_wanted(flag: bool, env: Mapping[str, str]) -> bool:
    """``--otel``, or ``NOTIFYKIT_BACKUP_OTEL`` set to a true value."""
    raw = env.get(OTEL_ENV, "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise BackupConfigError(f"{OTEL_ENV}={env[OTEL_ENV]!r}: use 1 (export traces, as --otel does) or 0")
    return flag or raw in _TRUE


class _CountingExporter:
    """The OTLP exporter, counting the spans it could not deliver (it logs only to a logger
    the command does not show)."""

    def __init__(self, exporter: Any, success: Any) -> None:
        self._exporter = exporter
        self._success = success
        self.lost = 0

    def export(self, spans: Sequence[Any]) -> Any:
        result = self._exporter.export(spans)
        if result != self._success:
            self.lost += len(spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._exporter.force_flush(timeout_millis))


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc.name or name
        raise BackupConfigError(f"--otel needs the OpenTelemetry SDK and its OTLP exporter, and {missing} is not"
                                f" installed: {INSTALL_HINT}") from None


def _endpoint(env: Mapping[str, str], protocol: str) -> str:
    """Where the spans go, for the warning line (what the exporter resolves)."""
    explicit = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ("http://localhost:4317" if protocol == "grpc"
                                                      else "http://localhost:4318")
    return base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"


@contextmanager
def otel_export(flag: bool, err: TextIO, env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Export the command's spans over OTLP when ``--otel`` or ``NOTIFYKIT_BACKUP_OTEL`` asks;
    flush them when the command ends, however it ends. A tracer provider the process already
    has (an application calling ``main()``) is used as it is. BackupConfigError, naming the
    variable or the missing package, when the setup cannot be done."""
    env = os.environ if env is None else env
    if not otel_wanted(flag, env) or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        yield
        return
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol not in _EXPORTERS:
        variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") else \
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise BackupConfigError(f"{variable}={protocol!r}: --otel exports with {' or '.join(_EXPORTERS)}")
    trace = _import("opentelemetry.trace")
    sdk_trace = _import("opentelemetry.sdk.trace")
    export = _import("opentelemetry.sdk.trace.export")
    resources = _import("opentelemetry.sdk.resources")
    exporter_module = _import(_EXPORTERS[protocol])
    if type(trace.get_tracer_provider()).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
        yield  # the application's own provider exports already
        return
    resource = resources.Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(resources.Resource({"service.name": DEFAULT_SERVICE_NAME}))
    try:
        exporter = _CountingExporter(exporter_module.OTLPSpanExporter(), export.SpanExportResult.SUCCESS)
    except ValueError as exc:  # e.g. a malformed OTEL_EXPORTER_OTLP_HEADERS or _TIMEOUT
        raise BackupConfigError(f"--otel: the OTEL_EXPORTER_OTLP_* settings are not valid: {exc}") from None
    provider = sdk_trace.TracerProvider(resource=resource)
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()  # exports what the batch processor still holds
        if exporter.lost:
            where = redact_text(_endpoint(env, protocol))
            err.write(f"notifykit-backup: warning: OpenTelemetry: {exporter.lost} span(s) could not be exported to"
                      f" {where} ({protocol})\n")
