"""``notifykit asyncapi --config FILE``: the AsyncAPI 3.0 document of an application's own event
catalogue, registered as an entry point (``notifykit.catalogues``) or named MODULE:ATTRIBUTE,
with the channels of the application's configuration; validated against the AsyncAPI 3.0
JSON Schema. Every problem is one ``notifykit: error:`` line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from notifykit.cli import main

from .test_asyncapi import asyncapi_errors

APP = textwrap.dedent('''
    from notifykit import EventCatalogue

    catalogue = EventCatalogue("billing", "1.2")
    invoice = catalogue.schema("invoice", {"type": "object", "required": ["id"],
                                           "properties": {"id": {"type": "string"}}})
    catalogue.event("billing.invoice.created", invoice, summary="an invoice was issued")
    catalogue.event("billing.invoice.failed", invoice, priority="error")

    def make():
        return catalogue

    not_a_catalogue = {"billing.invoice.created": {}}
''')


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An application module ``billing_events_app`` on sys.path, its catalogue registered as
    ``billing`` by an installed distribution, and its notifykit configuration."""
    (tmp_path / "billing_events_app.py").write_text(APP, encoding="utf-8")
    dist = tmp_path / "billing_app-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: billing-app\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[notifykit.catalogues]\nbilling = billing_events_app:make\n",
                                           encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "billing.toml"
    config.write_text(textwrap.dedent('''
        publisher_id = "billing.host1"
        [transports.rabbit]
        url = "amqp://app:s3cret-pw@127.0.0.1:5672/?exchange=billing"
    '''), encoding="utf-8")
    return config


def asyncapi(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["asyncapi", *args]) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("catalogue", [[], ["--catalogue", "billing"], ["--catalogue", "billing_events_app:catalogue"],
                                       ["--catalogue", "billing_events_app:make"]])
def test_the_registered_catalogue_through_the_configured_transports(app: Path, capsys: pytest.CaptureFixture[str],
                                                                   catalogue: list[str]) -> None:
    document = asyncapi(capsys, "--config", str(app), *catalogue)
    assert asyncapi_errors(document) == []
    assert document["info"] == {"title": "billing", "version": "1.2", "description": "billing"}
    assert list(document["servers"]) == ["rabbit"]  # type: ignore[call-overload]
    channels = document["channels"]
    assert isinstance(channels, dict)
    assert sorted(c["address"] for c in channels.values()) == ["notifications.error", "notifications.info"]
    messages = document["components"]["messages"]  # type: ignore[index]
    assert set(messages) == {"billing.invoice.created.oslo", "billing.invoice.failed.oslo"}
    assert "billing.host1" in json.dumps(messages)
    assert "s3cret" not in json.dumps(document)


@pytest.mark.parametrize(("catalogue", "error"), [
    ("payroll", "--catalogue payroll: no catalogue of that name in notifykit.catalogues (registered: billing);"
                " or give MODULE:ATTRIBUTE"),
    ("billing_events_app:nothing", "--catalogue billing_events_app:nothing: cannot load it (AttributeError: module"
                                   " 'billing_events_app' has no attribute 'nothing')"),
    ("no_such_app_module:catalogue", "--catalogue no_such_app_module:catalogue: cannot load it"
                                     " (ModuleNotFoundError: No module named 'no_such_app_module')"),
    ("billing_events_app:not_a_catalogue", "--catalogue billing_events_app:not_a_catalogue: is a dict, not a"
                                           " notifykit EventCatalogue (or a function returning one)"),
])
def test_a_catalogue_that_cannot_be_had_is_one_line(app: Path, capsys: pytest.CaptureFixture[str], catalogue: str,
                                                    error: str) -> None:
    assert main(["asyncapi", "--config", str(app), "--catalogue", catalogue]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"notifykit: error: {error}\n"


def test_without_a_registered_catalogue_it_asks_for_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "n.toml"
    config.write_text('[transports.log]\nurl = "log://stderr"\n', encoding="utf-8")
    assert main(["asyncapi", "--config", str(config)]) == 2
    assert capsys.readouterr().err == ("notifykit: error: name the catalogue with --catalogue NAME or MODULE:ATTRIBUTE"
                                       " (registered in notifykit.catalogues: none)\n")


def test_a_missing_configuration_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi", "--config", str(tmp_path / "absent.toml"), "--catalogue", "x:y"]) == 2
    assert capsys.readouterr().err.startswith("notifykit: error: cannot read configuration file ")
