"""``notifykit-backup --otel`` (and ``NOTIFYKIT_BACKUP_OTEL=1``): the command's spans exported
over OTLP/HTTP, for real, to a receiver this test runs on a loopback port, which decodes each
request with opentelemetry-proto's ExportTraceServiceRequest; and one clear error line when
the setup cannot be done."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup.cli import main

from .helpers import write_volume

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint: keeps every decoded request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Any] = []
        self.paths: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = trace_service.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.paths.append(self.path)
        answer = trace_service.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def command_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The backup settings in tmp_path, the OTLP settings, and nothing else of either kind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NOTIFYKIT_BACKUP_"))}
    env.update({
        "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "catalog.sqlite3"),
        "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
        "NOTIFYKIT_BACKUP_NOTIFIER_URL": f"log://{tmp_path / 'n.jsonl'}",
        "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl"),
        "NOTIFYKIT_BACKUP_CHUNK_SIZE": "16KiB",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "backup-otel-test",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",  # loopback only, never a proxy
    })
    env.update(extra)
    return env


def run_backup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifykit.backup.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_otel_exports_the_create_span_its_stages_and_the_notifications(tmp_path: Path, receiver: Receiver) -> None:
    volume = write_volume(tmp_path / "volume.img", 5 * 16384)
    done = run_backup(command_env(tmp_path, receiver.endpoint), "--otel", "create", str(volume), "--name", "nightly")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning") == 0, done.stderr
    backup_id = done.stdout.strip()
    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"backup-otel-test"}
    by_name = {span.name: span for _, span in spans}
    create = by_name["backup.create"]
    attributes = {a.key: a.value for a in create.attributes}
    assert attributes["notifykit.backup.id"].string_value == backup_id
    assert attributes["notifykit.backup.size_bytes"].int_value == 5 * 16384
    assert attributes["notifykit.backup.store_kind"].string_value == "posix"
    for stage in ("read", "pack", "store", "metadata"):
        assert by_name[f"backup.create.{stage}"].parent_span_id == create.span_id, stage
    # the Notifier's spans of the create's notifications, in the create's trace
    notifications = [span for _, span in spans if span.name.startswith("create backup.create.")]
    assert {span.name for span in notifications} >= {"create backup.create.start", "create backup.create.end"}
    assert all(span.trace_id == create.trace_id and span.parent_span_id == create.span_id for span in notifications)


def test_the_environment_variable_turns_it_on_for_verify(tmp_path: Path, receiver: Receiver) -> None:
    volume = write_volume(tmp_path / "volume.img", 3 * 16384)
    env = command_env(tmp_path, receiver.endpoint)
    created = run_backup(env, "create", str(volume))  # not exported: no --otel, no variable
    assert created.returncode == 0, created.stderr
    assert receiver.requests == []
    backup_id = created.stdout.strip()
    verified = run_backup({**env, "NOTIFYKIT_BACKUP_OTEL": "1"}, "verify", backup_id)
    assert verified.returncode == 0, verified.stderr
    by_name = {span.name: span for _, span in receiver.spans()}
    verify = by_name["backup.verify"]
    assert {a.key: a.value.string_value for a in verify.attributes}["notifykit.backup.id"] == backup_id
    assert by_name["backup.verify.check"].parent_span_id == verify.span_id


def test_spans_the_collector_refused_are_one_warning_line(tmp_path: Path, receiver: Receiver) -> None:
    endpoint = receiver.endpoint
    receiver.shutdown()
    receiver.server_close()  # nothing listens there any more
    volume = write_volume(tmp_path / "volume.img", 16384)
    done = run_backup(command_env(tmp_path, endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="2"), "--otel", "create", str(volume))
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "OpenTelemetry" in line]
    assert line.startswith("notifykit-backup: warning: OpenTelemetry: ")
    assert f"could not be exported to {endpoint}/v1/traces (http/protobuf)" in line


@pytest.mark.parametrize("module", ["opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"])
def test_missing_packages_are_one_error_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], module: str) -> None:
    for key, value in command_env(tmp_path, "http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert main(["--otel", "list"]) == 1
    err = capsys.readouterr().err
    assert err == (f"notifykit-backup: error: --otel needs the OpenTelemetry SDK and its OTLP exporter, and {module}"
                   " is not installed: pip install 'notifykit[otel-sdk]'\n")


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("NOTIFYKIT_BACKUP_OTEL", "maybe", "NOTIFYKIT_BACKUP_OTEL='maybe': use 1 (export traces, as --otel does) or 0"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json",
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': --otel exports with http/protobuf or grpc"),
])
def test_bad_settings_are_one_error_line_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], variable: str,
                                                             value: str, message: str) -> None:
    for key, setting in command_env(tmp_path, "http://127.0.0.1:9").items():
        monkeypatch.setenv(key, setting)
    monkeypatch.setenv(variable, value)
    assert main(["--otel", "list"]) == 1
    assert capsys.readouterr().err == f"notifykit-backup: error: {message}\n"
