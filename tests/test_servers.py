"""The one fixture body for the servers of scripts/: a missing binary is a one-line skip, or
a failure under NOTIFYKIT_REQUIRE_BROKERS=1, and a server that started is stopped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from . import helpers


class FakeServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def fake_script(monkeypatch: pytest.MonkeyPatch, missing: list[str]) -> None:
    module = SimpleNamespace(missing_binaries=lambda: missing, FakeServer=FakeServer)
    monkeypatch.setattr(helpers, "load_script", lambda name: module)


def test_missing_binaries_skip_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    fake_script(monkeypatch, ["radosgw", "ceph-osd"])
    monkeypatch.setattr(helpers, "REQUIRE_BROKERS", False)
    with pytest.raises(pytest.skip.Exception) as caught, \
            helpers.script_server(tmp_path_factory, "ceph-aio", "FakeServer", "Ceph", "ceph-osd radosgw"):
        pass
    assert str(caught.value) == "Ceph not installed (missing radosgw, ceph-osd; apt-get install ceph-osd radosgw)"


def test_missing_binaries_fail_when_brokers_are_required(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    fake_script(monkeypatch, ["rabbitmq-server"])
    monkeypatch.setattr(helpers, "REQUIRE_BROKERS", True)
    with pytest.raises(pytest.fail.Exception) as caught, \
            helpers.script_server(tmp_path_factory, "rabbitmq-cluster", "FakeServer", "RabbitMQ", "rabbitmq-server"):
        pass
    assert str(caught.value) == ("RabbitMQ not installed (missing rabbitmq-server; apt-get install rabbitmq-server);"
                                 " NOTIFYKIT_REQUIRE_BROKERS=1 makes this a failure")


def test_the_server_starts_in_a_dir_named_after_the_script_and_stops(
        monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    fake_script(monkeypatch, [])
    started: list[Any] = []
    with pytest.raises(RuntimeError), \
            helpers.script_server(tmp_path_factory, "swift-aio", "FakeServer", "Swift", "swift") as server:
        started.append(server)
        assert server.calls == ["start"]
        raise RuntimeError("the session ends badly")
    (server,) = started
    assert server.calls == ["start", "stop"]
    assert server.directory.name.startswith("swift-aio") and server.directory.is_dir()
