"""``notifykit-backup asyncapi``: the AsyncAPI 3.0 document of the backup notifications, valid
against the AsyncAPI 3.0 JSON Schema and against what a real demo backup sends."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from notifykit import InvalidNotificationError, WireFormat
from notifykit.backup import BackupNotFoundError, RestoreTargetError
from notifykit.backup._asyncapi import EVENTS, SCHEMA_FILE, backup_catalogue
from notifykit.backup.cli import main

from ..test_asyncapi import asyncapi_errors, message_validator
from .helpers import CHUNK, CTX, backup_env
from .test_payload_schema import EVERY_2, catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_the_packaged_payload_schema_is_the_one_in_docs() -> None:
    packaged = (ROOT / "backup" / SCHEMA_FILE).read_bytes()
    docs = (ROOT / "docs" / "schemas" / "backup-payload.schema.json").read_bytes()
    assert packaged == docs, ("backup/backup-payload.schema.json (what the wheel ships and `notifykit-backup asyncapi`"
                              " prints) differs from docs/schemas/backup-payload.schema.json: copy the changed one over"
                              " the other")


def test_the_catalogue_is_the_table_in_docs_backup_md() -> None:
    section = (ROOT / "docs" / "backup.md").read_text(encoding="utf-8").split("## Notification catalogue", 1)[1]
    rows = re.findall(r"^\| `(backup\.[a-z_.]+)` \| (\w+) \|", section.split("\n### ", 1)[0], re.M)
    assert [(name, priority.value.upper()) for name, priority, *_ in EVENTS] == rows
    statuses = catalogue()  # the rows whose status is one word
    for name, _, status, _ in EVENTS:
        assert status is None or status == statuses[name][1], name  # None: .error and backup.exists may carry any status
        assert status is not None or name == "backup.exists" or name.endswith(".error") \
            or name.startswith("backup.reset_status.")  # a reset starts from, and sets, more than one status


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_a_demo_backups_notifications_match_the_document(fmt: WireFormat, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The real CLI twice with the same --notifier: `demo` writes the wire bytes to a file,
    `asyncapi` describes them; each line must be the message its event type's channel names."""
    sent = tmp_path / "notifications.jsonl"
    notifier = ["--notifier", f"log://{sent}?format={fmt.value}", "--host", "host1"]
    code, _, err = run(["demo", "--size", "1MiB", "--chunk-size", "256KiB", *notifier], capsys)
    assert code == 0, err
    code, out, err = run(["asyncapi", *notifier], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert asyncapi_errors(doc) == []
    (channel,) = doc["channels"].values()  # log:// has one channel, no fixed address
    lines = sent.read_text(encoding="utf-8").splitlines()
    seen = set()
    for line in lines:
        body = json.loads(line)
        event = (json.loads(body["oslo.message"]) if fmt is WireFormat.OSLO else body).get(
            "event_type", body.get("type"))
        seen.add(event)
        ref = channel["messages"][event]["$ref"]
        assert ref == f"#/components/messages/{event}.{fmt.value}"
        errors = [e.message for e in message_validator(doc, ref + "/payload").iter_errors(body)]
        if fmt is WireFormat.OSLO:
            inner = json.loads(body["oslo.message"])
            errors += [e.message for e in message_validator(doc, ref + "/payload/x-oslo-message").iter_errors(inner)]
        assert errors == [], f"{event}: {errors}"
    assert seen == {"backup.create.start", "backup.createprogress", "backup.create.end", "backup.restore.start",
                    "backup.restoreprogress", "backup.restore.end", "backup.delete.start", "backup.delete.end"}
    assert doc["components"]["messages"][f"backup.create.end.{fmt.value}"]["x-notifykit-publisher-id"] == "backup.host1"


def test_asyncapi_names_the_channels_of_each_configured_transport(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text('[transports.rabbit]\nurl = "amqp://guest:guest@127.0.0.1:5672/"\n'
                      '[transports.kafka]\nurl = "kafka://127.0.0.1:9092/"\nformat = "cloudevents"\n', encoding="utf-8")
    code, out, err = run(["asyncapi", "--notifier-config", str(config)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert asyncapi_errors(doc) == []
    assert {c["address"] for c in doc["channels"].values()} == {
        "notifications.info", "notifications.error"}  # oslo's <topic>.<priority>, on both
    errors = doc["channels"]["rabbit.notifications.error"]["messages"]
    assert set(errors) == {"backup.create.error", "backup.restore.error", "backup.delete.error",
                           "backup.reset_status.error"}
    assert errors["backup.create.error"]["$ref"].endswith(".oslo")
    assert doc["channels"]["kafka.notifications.info"]["messages"]["backup.exists"]["$ref"].endswith(".cloudevents")
    assert "guest" not in out


def test_asyncapi_with_a_bad_notifier_url_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["asyncapi", "--notifier", "bogus://x"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("notifykit-backup: error: unknown transport scheme 'bogus'") and err.count("\n") == 1


@pytest.mark.asyncio
async def test_error_refused_and_audit_payloads_match_their_event_schemas(tmp_path: Path) -> None:
    """What the demo does not emit: .error (a failure and a refused request) and backup.exists."""
    async with backup_env(tmp_path, policy=EVERY_2) as env:
        record = await env.service.create_backup(env.volume(3 * CHUNK), ctx=CTX)
        target = tmp_path / "exists.img"
        target.write_bytes(b"keep")
        with pytest.raises(RestoreTargetError):
            await env.service.restore_backup(record.id, target, ctx=CTX)
        with pytest.raises(BackupNotFoundError):
            await env.service.delete_backup("no-such-id", ctx=CTX)
        now = datetime.now(UTC)
        await env.service.audit(now - timedelta(hours=1), now + timedelta(minutes=1), ctx=CTX)
    sent = env.memory.messages
    assert {"backup.restore.error", "backup.delete.error", "backup.exists"} <= {n.event_type for n in sent}
    events = backup_catalogue()
    for n in sent:
        events.validate(n.event_type, n.payload)
    # the per-event schemas are narrower than the shared one
    end = next(n.payload for n in sent if n.event_type == "backup.create.end")
    progress = next(n.payload for n in sent if n.event_type == "backup.createprogress")
    mismatches: list[tuple[str, dict[str, Any]]] = [
        ("backup.createprogress", end), ("backup.create.end", progress), ("backup.exists", end),
        ("backup.restore.end", end | {"status": "restoring"}), ("backup.create.error", end)]
    for event_type, payload in mismatches:
        with pytest.raises(InvalidNotificationError):
            events.validate(event_type, payload)


def test_the_document_embeds_the_packaged_schema_in_asyncapis_dialect() -> None:
    doc = backup_catalogue().document()
    shared = doc["components"]["schemas"]["backup.payload"]
    packaged = json.loads((ROOT / "backup" / SCHEMA_FILE).read_text(encoding="utf-8"))
    assert shared["properties"] == packaged["properties"] and shared["dependencies"] == packaged["dependentRequired"]
    assert jsonschema.Draft7Validator.check_schema(shared) is None


SAMPLE = ["asyncapi", "--notifier", "amqp://rabbit.example:5672/", "--host", "host1"]


def test_the_sample_document_in_docs_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(SAMPLE, capsys)
    assert code == 0, err
    sample = (ROOT / "docs" / "asyncapi" / "backup.asyncapi.json").read_text(encoding="utf-8")
    assert out == sample, "docs/asyncapi/backup.asyncapi.json is stale: notifykit-backup " + " ".join(SAMPLE) \
        + " > docs/asyncapi/backup.asyncapi.json"
    page = (ROOT / "docs" / "asyncapi.md").read_text(encoding="utf-8")
    assert " ".join(SAMPLE[1:]) in page
