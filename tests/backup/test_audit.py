"""The usage audit: ``notifykit-backup audit`` emits one ``backup.exists`` per backup that
existed during the period, deleted ones included (Cinder's cinder-volume-usage-audit)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from notifykit.backup import BackupConfigError
from notifykit.backup._audit import audit_period, previous_hour
from notifykit.backup.cli import main

from .helpers import write_volume
from .test_cli import lines, settings  # noqa: F401  (fixture)
from .test_payload_schema import SCHEMA


def _created(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]  # after any "deleted …" line


def _now() -> str:
    return datetime.now(UTC).isoformat()


def test_audit_reports_exactly_the_backups_that_existed(settings: Path,  # noqa: F811
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    volume = write_volume(settings / "vol.img", 20_000)
    log = settings / "n.jsonl"
    common = ["--notifier", f"log://{log}"]
    create = ["create", str(volume), *common]
    assert main([*create, "--name", "gone-before"]) == 0
    gone_before = _created(capsys)
    assert main(["delete", gone_before, *common]) == 0
    assert main([*create, "--name", "kept"]) == 0
    kept = _created(capsys)
    assert main([*create, "--name", "deleted-during"]) == 0
    deleted_during = _created(capsys)
    start = _now()
    assert main(["delete", deleted_during, *common]) == 0
    assert main([*create, "--name", "created-during"]) == 0
    created_during = _created(capsys)
    end = _now()
    assert main([*create, "--name", "after"]) == 0
    after = _created(capsys)
    capsys.readouterr()
    first = len(lines(log))

    assert main(["audit", "--start", start, "--end", end, *common]) == 0
    out, err = capsys.readouterr()
    events = lines(log)[first:]
    assert [e["event_type"] for e in events] == ["backup.exists"] * 3
    assert {e["payload"]["backup_id"] for e in events} == {kept, deleted_during, created_during}
    assert {line.split()[0] for line in out.splitlines()} == {kept, deleted_during, created_during}
    assert "3 backup.exists" in err
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for event in events:
        payload = event["payload"]
        assert event["priority"] == "info" and event["publisher_id"].startswith("backup.")
        assert payload["audit_period_beginning"] == datetime.fromisoformat(start).isoformat()
        assert payload["audit_period_ending"] == datetime.fromisoformat(end).isoformat()
        assert not list(validator.iter_errors(payload))
    by_id = {e["payload"]["backup_id"]: e["payload"] for e in events}
    assert by_id[deleted_during]["status"] == "deleted" and by_id[kept]["status"] == "available"
    assert by_id[kept]["size_bytes"] == 20_000 and by_id[kept]["size"] == 1
    assert gone_before not in by_id and after not in by_id

    # show --json tells when a backup was deleted: what the audit window is computed from.
    assert main(["show", deleted_during, "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert start <= shown["deleted_at"] <= end


def test_default_period_is_the_previous_full_hour() -> None:
    now = datetime(2026, 12, 1, 22, 53, 7, tzinfo=UTC)
    assert previous_hour(now) == (datetime(2026, 12, 1, 21, tzinfo=UTC), datetime(2026, 12, 1, 22, tzinfo=UTC))
    assert audit_period(None, None, now) == previous_hour(now)
    assert audit_period("2026-12-01T10:00:00", None) == (datetime(2026, 12, 1, 10, tzinfo=UTC),
                                                         datetime(2026, 12, 1, 11, tzinfo=UTC))
    assert audit_period(None, "2026-12-01T12:00:00+02:00") == (datetime(2026, 12, 1, 9, tzinfo=UTC),
                                                               datetime(2026, 12, 1, 10, tzinfo=UTC))


@pytest.mark.parametrize(("start", "end", "message"), [
    ("yesterday", None, "--start must be an ISO 8601 date and time"),
    ("2026-12-01T10:00:00Z", "2026-12-01T09:00:00Z", "must be before --end"),
])
def test_bad_periods_are_one_line(settings: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                  start: str, end: str | None, message: str) -> None:
    with pytest.raises(BackupConfigError, match=message):
        audit_period(start, end)
    args = ["audit", "--start", start, *(["--end", end] if end else []), "--notifier", "log://stderr"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("notifykit-backup: error: ") and message in err and err.count("\n") == 1
