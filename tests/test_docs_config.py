"""docs/configuration.md and docs/backup.md list exactly the options the code takes.

Each transport is built from a minimal URL with an options mapping that records every key
the transport asks for (``take_*`` and direct ``pop``), so an option added to a transport
without a row in its section of the option tables fails here, and so does a documented
option that no transport takes any more.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from notifykit import Notification, TransportConfig, TransportStats, WireFormat, render_prometheus
from notifykit._config import _CIRCUIT_KEYS, _FILTER_KEYS, _NOTIFIER_KEYS, _RETRY_KEYS, _TABLE_KEYS, _URL_KEYS
from notifykit._loading import load_transport_class
from notifykit._url import parse_url
from notifykit.backup._config import BackupConfig
from notifykit.backup._stores import NAMESPACE as STORES
from notifykit.backup._stores import StoreSettings, load_store_class
from notifykit.transport import Transport, TransportSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
BACKUP = (DOCS / "backup.md").read_text(encoding="utf-8")

# A minimal valid URL per URL form (a transport may take options only on one form).
MINIMAL_URLS = {
    "memory": ["memory://"],
    "log": ["log://", "log://stderr", "log:///tmp/notifykit-docs-test.jsonl"],
    "amqp": ["amqp://guest:guest@127.0.0.1:5672/"],
    "amqps": ["amqps://guest:guest@127.0.0.1:5671/"],
    "http": ["http://127.0.0.1:9/hook"],
    "https": ["https://127.0.0.1:9/hook"],
    "kafka": ["kafka://127.0.0.1:9092/"],
    "kafka+ssl": ["kafka+ssl://127.0.0.1:9093/"],
    "nats": ["nats://127.0.0.1:4222/"],
    "nats+tls": ["nats+tls://127.0.0.1:4222/"],
    "redis": ["redis://127.0.0.1:6379/0"],
    "rediss": ["rediss://127.0.0.1:6380/0"],
    "mqtt": ["mqtt://127.0.0.1:1883/"],
    "mqtts": ["mqtts://127.0.0.1:8883/"],
}


class RecordingOptions(dict[str, list[str]]):
    """The options mapping of a TransportSettings, remembering every key asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().pop(key, *default)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def options_taken(cls: type[Transport], url: str) -> set[str]:
    """Build ``cls`` from ``url`` (no network) and return every option key it asked for."""
    config = TransportConfig.from_url(url)
    parsed = parse_url(config.url)
    settings = TransportSettings.build("docs", parsed, config.format or cls.default_format, config.topics, {})
    recording = RecordingOptions(settings.options)
    settings.options = recording
    cls.from_settings(settings)
    return recording.asked


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row (header and separator rows included)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.lstrip().startswith("|")]


def names_in(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def transport_sections(markdown: str) -> dict[str, str]:
    """``### `scheme://` …`` sections of "Transport options": scheme -> section text."""
    part = markdown.split("## Transport options", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for chunk in part.split("\n### ")[1:]:
        heading, _, body = chunk.partition("\n")
        for scheme in re.findall(r"`([a-z][a-z0-9+]*)://`", heading):
            sections[scheme] = body
    return sections


def documented_options(section: str) -> set[str]:
    """First-column names of the section's ``| option | default | meaning |`` table."""
    names: set[str] = set()
    for row in table_rows(section):
        if row[0] in ("option", "") or set(row[0]) <= set("-: "):
            continue
        names |= names_in(row[0])
    return names


def project_schemes() -> dict[str, type[Transport]]:
    """The URL schemes this project registers (third-party plugins have their own docs)."""
    schemes = {}
    for ep in entry_points(group="notifykit.transports"):
        if ep.value.startswith("notifykit.transports."):
            schemes[ep.name] = load_transport_class(ep.name)
    return schemes


def test_every_registered_scheme_has_a_minimal_url_and_a_documented_section() -> None:
    sections = transport_sections(CONFIGURATION)
    assert set(project_schemes()) == set(MINIMAL_URLS)
    assert set(MINIMAL_URLS) <= set(sections), f"no '### `scheme://`' section for {set(MINIMAL_URLS) - set(sections)}"


@pytest.mark.parametrize("scheme", sorted(MINIMAL_URLS))
def test_transport_options_match_their_documented_table(scheme: str) -> None:
    cls = project_schemes()[scheme]
    taken: set[str] = set()
    for url in MINIMAL_URLS[scheme]:
        taken |= options_taken(cls, url)
    documented = documented_options(transport_sections(CONFIGURATION)[scheme])
    assert taken, f"{scheme}: recorded no option at all; the recording no longer sees the transport's options"
    assert taken - documented == set(), f"{scheme}: options the transport takes but docs/configuration.md does not list"
    assert documented - taken == set(), f"{scheme}: documented options the transport does not take"


def test_the_checker_sees_an_undocumented_option() -> None:
    """A transport that takes an option nobody documented is caught by the same recording."""

    @dataclasses.dataclass(frozen=True)
    class KnobblyOptions:
        knob: str

        @classmethod
        def from_settings(cls, settings: TransportSettings) -> Self:
            settings.options.pop("raw_popped_knob", None)
            return cls(settings.take_str("undocumented_knob", "x") or "")

    class Knobbly(Transport):
        default_format: ClassVar[WireFormat] = WireFormat.JSON
        Options = KnobblyOptions

        async def send(self, batch: Sequence[Notification]) -> None:
            raise NotImplementedError

    taken = options_taken(Knobbly, "memory://")
    assert taken == {"undocumented_knob", "raw_popped_knob"}
    assert not taken <= documented_options(transport_sections(CONFIGURATION)["memory"])


def _section(markdown: str, heading: str) -> str:
    return markdown.split(heading, 1)[1].split("\n## ", 1)[0]


def test_notifier_wide_keys_are_documented() -> None:
    documented: set[str] = set()
    for row in table_rows(_section(CONFIGURATION, "## Notifier-wide settings")):
        documented |= names_in(row[0])
    assert _NOTIFIER_KEYS - {"transports"} - documented == set()
    assert documented - _NOTIFIER_KEYS == set(), "documented notifier keys the code does not accept"
    assert "[transports.NAME]" in CONFIGURATION


def test_per_transport_toml_and_url_keys_are_documented() -> None:
    rows = [row for row in table_rows(_section(CONFIGURATION, "## Per-transport settings")) if len(row) >= 2]
    toml: set[str] = set()
    url: set[str] = set()
    for row in rows:
        for name in names_in(row[0]):
            table, sep, key = name.partition("] ")
            if sep:  # "[retry] initial_delay"
                toml |= {table.lstrip("["), f"{table.lstrip('[')}.{key}"}
            else:
                toml.add(name.strip("[]"))
        url |= names_in(row[1])
    expected_toml = (_TABLE_KEYS | {f"retry.{k}" for k in _RETRY_KEYS} | {f"circuit.{k}" for k in _CIRCUIT_KEYS}
                     | {f"filter.{k}" for k in _FILTER_KEYS})
    assert expected_toml - toml == set(), "TOML keys accepted by notifykit/_config.py but not documented"
    assert toml - expected_toml == set(), "documented TOML keys notifykit/_config.py does not accept"
    assert _URL_KEYS - url == set(), "core URL query keys not documented"
    assert url - _URL_KEYS == set(), "documented core URL keys notifykit/_config.py does not consume"


def test_backup_settings_are_documented() -> None:
    documented: set[str] = set()
    for row in table_rows(_section(BACKUP, "## Configuration")):
        documented |= names_in(row[0])
    fields = {f.name for f in dataclasses.fields(BackupConfig)}
    assert fields - documented == set(), "BackupConfig settings missing from docs/backup.md"
    assert {name for name in documented if "*" not in name} - fields == set(), \
        "docs/backup.md documents settings BackupConfig does not have"


# A minimal valid URL per object store scheme this project registers.
MINIMAL_STORE_URLS = {
    "file": "/tmp/notifykit-docs-test-objects",
    "swift": "swift://u:k@127.0.0.1:8080/auth/v1.0",
    "swift+http": "swift+http://u:k@127.0.0.1:8080/auth/v1.0",
    "swift+https": "swift+https://u:k@127.0.0.1:8080/auth/v1.0",
    "s3": "s3://a:s@127.0.0.1:9000/bucket",
    "s3+http": "s3+http://a:s@127.0.0.1:9000/bucket",
    "s3+https": "s3+https://a:s@127.0.0.1:9000/bucket",
    "rados": "rados://pool?conf=/etc/ceph/ceph.conf&id=backup",
}


def store_sections(markdown: str) -> dict[str, str]:
    """``### `scheme://` …`` sections of "## Object stores": scheme -> section text."""
    part = markdown.split("## Object stores", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for chunk in part.split("\n### ")[1:]:
        heading, _, body = chunk.partition("\n")
        for scheme in re.findall(r"`([a-z][a-z0-9+]*)://`", heading):
            sections[scheme] = body.split("\n### ", 1)[0]
    return sections


def test_every_registered_store_has_a_documented_section_with_its_options() -> None:
    schemes = {ep.name for ep in entry_points(group=STORES) if ep.value.startswith("notifykit.backup.")}
    assert schemes == set(MINIMAL_STORE_URLS)
    sections = store_sections(BACKUP)
    for scheme, url in MINIMAL_STORE_URLS.items():
        assert scheme in sections, f"no '### `{scheme}://`' section under '## Object stores' in docs/backup.md"
        settings = StoreSettings.parse(url, env={})
        load_store_class(scheme).from_settings(settings)
        documented = documented_options(sections[scheme])
        assert settings.taken - documented == set(), f"{scheme}: options the store takes but docs/backup.md lacks"
        assert documented - settings.taken == set(), f"{scheme}: documented options the store does not take"


@pytest.mark.parametrize("scheme", sorted(MINIMAL_URLS))
def test_options_shadowed_by_core_url_keys_are_documented_as_toml_only(scheme: str) -> None:
    """A transport option named like a core URL key never reaches the transport from a URL
    (the core consumes it); its row must say it is set in the TOML ``[options]`` table."""
    cls = project_schemes()[scheme]
    shadowed = set().union(*(options_taken(cls, url) for url in MINIMAL_URLS[scheme])) & _URL_KEYS
    section = transport_sections(CONFIGURATION)[scheme]
    for key in shadowed:
        assert TransportConfig.from_url(f"{MINIMAL_URLS[scheme][0]}?{key}=1").options.get(key) is None
        rows = [row for row in table_rows(section) if key in names_in(row[0])]
        assert rows and "`[options]`" in " ".join(rows[0]), f"{scheme}: option {key!r} is shadowed by the core's URL key"


def test_documented_metrics_are_the_ones_render_prometheus_writes() -> None:
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    documented: set[str] = set()
    for row in table_rows(_section(operations, "## Metrics")):
        documented |= {name for name in names_in(row[0]) if name.startswith("notifykit_")}
    exposition = render_prometheus({"rabbit": TransportStats("rabbit")})
    written = {line.split("{", 1)[0] for line in exposition.splitlines() if not line.startswith("#")}
    assert written == documented


def test_readme_transport_table_names_every_registered_scheme() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in readme.split("## Transports", 1)[1].splitlines() if line.startswith("|"))
    missing = {scheme for scheme in project_schemes() if f"`{scheme}://" not in table}
    assert missing == set()
