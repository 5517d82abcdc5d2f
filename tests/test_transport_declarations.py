"""What the core writes about a transport it cannot know by itself — OpenTelemetry's
``messaging.system``, AsyncAPI's server protocol, channels and bindings — the transport
declares on its class. A third-party one, installed as a dist-info, is described as
precisely as the built-in ones, with nothing in notifykit edited; one that declares
nothing gets the safe defaults (its URL scheme; one channel without an address, no server).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from stevedore import ExtensionManager

from notifykit import EventCatalogue, Notifier, TransportConfig
from notifykit.transport import AsyncApiRoutes, Route, Transport, load_transport_class

from .test_asyncapi import asyncapi_errors

PLUGIN = textwrap.dedent('''
    from notifykit.transport import AsyncApiRoutes, Route, Transport

    class PigeonTransport(Transport):
        """Declares everything: its messaging system, its protocols and its routes."""

        messaging_system = "pigeon_post"
        asyncapi_protocols = {"pigeon": "pigeon", "pigeons": "secure-pigeon"}

        def asyncapi_routes(self, events):
            loft = self.settings.url.path.strip("/") or "loft"
            return AsyncApiRoutes(
                tuple(Route(f"{loft}/{priority.value}/{event}", (event,), {"x-pigeon": {"ring": event}})
                      for event, priority in events),
                operation_bindings={"x-pigeon": {"flight": "direct"}},
                pathname=self.settings.url.path)

        async def send(self, batch):
            pass

    class QuietTransport(Transport):
        """Declares nothing."""

        async def send(self, batch):
            pass
''')


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The distribution ``pigeon-transports`` installed: its module and dist-info on sys.path.

    stevedore keeps each group's entry points for the life of the process: it gets an empty
    cache for the test (and the process's own back after), so it reads the group again."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pigeon_declarations.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "pigeon_transports-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pigeon-transports\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[notifykit.transports]\npigeon = pigeon_declarations:PigeonTransport\n"
        "pigeons = pigeon_declarations:PigeonTransport\n"
        "quiet = pigeon_declarations:QuietTransport\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})


def catalogue() -> EventCatalogue:
    c = EventCatalogue("coop", "1.0")
    c.event("coop.egg.laid", {"type": "object"})
    c.event("coop.fox.seen", {"type": "object"}, priority="critical")
    return c


def test_the_defaults_are_the_scheme_and_one_channel_without_an_address() -> None:
    assert Transport.messaging_system is None and dict(Transport.asyncapi_protocols) == {}
    log = load_transport_class("log")
    assert log.messaging_system is None and "log" not in log.asyncapi_protocols
    assert load_transport_class("amqps").messaging_system == "rabbitmq"
    assert load_transport_class("mqtts").asyncapi_protocols["mqtts"] == "secure-mqtt"


@pytest.mark.usefixtures("plugins")
def test_a_third_party_transport_declares_its_asyncapi_server_channels_and_bindings() -> None:
    doc = catalogue().document([TransportConfig.from_url("pigeons://coop.example:7070/north", name="birds"),
                                TransportConfig.from_url("quiet://anywhere")])
    assert asyncapi_errors(doc) == []
    assert doc["servers"] == {"birds": {"host": "coop.example:7070", "protocol": "secure-pigeon",
                                        "description": "transport 'birds' (pigeons://, json format)",
                                        "pathname": "/north"}}
    fox = doc["channels"]["birds.north_critical_coop.fox.seen"]
    assert fox["address"] == "north/critical/coop.fox.seen"
    assert fox["bindings"] == {"x-pigeon": {"ring": "coop.fox.seen"}}
    assert fox["servers"] == [{"$ref": "#/servers/birds"}]
    assert list(fox["messages"]) == ["coop.fox.seen"]
    assert doc["operations"]["send.birds.north_critical_coop.fox.seen"]["bindings"] == {
        "x-pigeon": {"flight": "direct"}}
    # the one that declares nothing: a channel with every event type, no address, no server
    quiet = doc["channels"]["quiet"]
    assert quiet["address"] is None and "servers" not in quiet and list(quiet["messages"]) == [
        "coop.egg.laid", "coop.fox.seen"]
    assert set(doc["channels"]) == {"birds.north_info_coop.egg.laid", "birds.north_critical_coop.fox.seen", "quiet"}


@pytest.mark.usefixtures("plugins")
@pytest.mark.asyncio
@pytest.mark.parametrize(("url", "system"), [("pigeon://coop:7070/", "pigeon_post"), ("quiet://anywhere", "quiet")])
async def test_a_third_party_transport_declares_its_messaging_system(url: str, system: str, tmp_path: Path,
                                                                      otel_spans: Any) -> None:
    async with Notifier.from_url(url, publisher_id="coop.h1", dead_letters=tmp_path / "dl.jsonl") as notifier:
        await notifier.critical({}, "coop.fox.seen", {"where": "north"})
    spans = {span.name.split()[0]: span for span in otel_spans.get_finished_spans()}
    assert spans["create"].attributes["messaging.system"] == system
    assert spans["send"].attributes["messaging.system"] == system


def test_the_declarations_are_part_of_the_transport_toolkit() -> None:
    """What a plugin imports: ``notifykit.transport`` alone (the layout rule for transports)."""
    routes = AsyncApiRoutes((Route("a", ("e",)),))
    assert routes.operation_bindings == {} and routes.pathname is None and routes.routes[0].bindings == {}
