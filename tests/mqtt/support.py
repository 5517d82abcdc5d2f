"""An independent MQTT 5 subscriber (paho's own network thread, not the transport's asyncio
driver) and a Mosquitto the fault tests start themselves on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT = "127.0.0.1", 1883


def fresh_prefix() -> str:
    return f"nk-test-{uuid.uuid4().hex[:12]}"


@dataclass
class Received:
    topic: str
    payload: bytes
    user: dict[str, str]
    content_type: str | None
    expiry: int | None

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)  # type: ignore[no-any-return]


@dataclass
class Subscriber:
    """Subscribes ``<prefix>/#`` with QoS 1; ``session=True``: a persistent session (fixed client
    id, clean start only the first time) so the broker keeps what arrives while it is away."""

    prefix: str
    port: int = PORT
    session: bool = False
    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:12]}",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(f"{self.prefix}/#", qos=1)
        self.client.reconnect_delay_set(1, 1)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        properties = message.properties
        received = Received(message.topic, bytes(message.payload), dict(getattr(properties, "UserProperty", [])),
                            getattr(properties, "ContentType", None), getattr(properties, "MessageExpiryInterval", None))
        with self._lock:
            self.messages.append(received)

    def start(self, timeout: float = 10) -> Subscriber:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600 if self.session else 0
        # A fresh client id has no old session: clean_start=false from the first connection, or
        # Mosquitto 2.0 does not write the session (nor its subscription) to its database.
        self.client.connect(HOST, self.port, keepalive=5, clean_start=not self.session, properties=properties)
        self.client.loop_start()
        assert self._subscribed.wait(timeout), "subscription not acknowledged"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def ids(self) -> Counter[str]:
        return Counter(m.user["message_id"] for m in self.snapshot())

    def wait_for(self, ids: set[str], timeout: float = 30) -> Counter[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.ids()
            if ids <= set(seen):
                return seen
            time.sleep(0.02)
        missing = ids - set(self.ids())
        raise AssertionError(f"{len(missing)} of {len(ids)} message ids never arrived, e.g. {sorted(missing)[:3]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A mosquitto of the test's own on a free port, persistence in ``folder``, stopped by PID.
    ``autosave_on_changes`` with an interval of 1 writes the database after each change, so a
    SIGKILL loses as little as this broker can lose. ``max_queued_messages 0``: no limit on what
    it queues for a subscriber that is away or slow (Mosquitto's default drops past 1,000)."""

    def __init__(self, folder: Path, acl: str | None = None, *, persistence: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
                 f"log_dest file {folder}/mosquitto.log"]
        if persistence:
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        if os.geteuid() == 0:  # as root, mosquitto would switch to its own user, who cannot read a 0700 temp dir
            lines.append("user root")
        if acl is not None:
            (folder / "acl").write_text(acl)
            lines.append(f"acl_file {folder}/acl")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @staticmethod
    def binary() -> str | None:
        return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)

    def start(self, timeout: float = 10) -> None:
        binary = self.binary()
        assert binary is not None
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.process.returncode}: "
                                       f"{(self.folder / 'mosquitto.log').read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
