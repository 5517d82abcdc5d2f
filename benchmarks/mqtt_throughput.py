"""Confirmed MQTT 5 throughput: notifykit vs a hand-written paho-mqtt QoS 1 loop with an in-flight window.

All against one Mosquitto started here on a free loopback port (its defaults, but
``max_queued_messages 0``: the machine's broker drops QoS 1 messages for a subscriber more
than 1,000 behind, which the check below would see as losses) and stopped by PID, in one run, same payload, same topic layout
(``<prefix>/info/backup.createprogress``) and the same MQTT 5 properties (user properties
event_type/priority/message_id, content type, payload format indicator), each run on a
prefix of its own with a paho subscriber (QoS 1, another process) that must receive all N:

* ``notifykit``: ``await notifier.info(...)`` N times in a tight loop, timed until
  ``aclose()`` returned, i.e. until every PUBACK came (``stats.sent == N`` checked);
* ``paho_thread_window``: paho's own network thread (``loop_start``), the caller publishing
  each message (uuid4 id, timestamp, JSON body, properties built per message) as soon as
  fewer than W are unacknowledged (a semaphore released by ``on_publish``), W = the broker's
  Receive Maximum (Mosquitto's default 20) — what notifykit's window is too; timed until
  every PUBACK came;
* ``transport_send_prebuilt`` (information): ``MqttTransport.send()`` alone, on batches of
  500 notifications created before the clock starts — the transport's own cost.

Rounds are interleaved (the order rotates each round); a rate is the median of its rounds,
a ratio the median of the per-round ratios.
Usage: ``python benchmarks/mqtt_throughput.py [N [ROUNDS]]`` (defaults 20000 and 5).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _goals import goal, median, paired_ratio, rotated

from notifykit import Notification, Notifier
from notifykit.transport import TransportSettings, WireFormat, parse_url
from notifykit.transports.mqtt import MqttTransport
from tests.mqtt.support import Mosquitto

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
HOST = "127.0.0.1"
BROKER = Mosquitto(Path(tempfile.mkdtemp(prefix="nk-bench-mqtt-")), persistence=False)
PORT = BROKER.port
URL = f"mqtt://{HOST}:{PORT}/"
PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}
CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
COMPACT = (",", ":")
CAUSE = ("see transport_send_prebuilt for the transport's own cost; end to end the caller's notify() also does "
         "the core's per-notification work (validation, payload JSON, id, timestamp, the queue hand-off) on the "
         "one core the event loop has, while the anchor's PUBACKs are read by paho's own thread")
_prefixes = iter(range(1_000_000))


#: The subscriber, in a process of its own: prints "ready" once subscribed, then the count.
SUBSCRIBER = """
import sys, threading
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, topic, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
done, count = threading.Event(), 0
def on_message(client, userdata, message):
    global count
    count += 1
    if count >= n:
        done.set()
client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
client.on_message = on_message
client.on_subscribe = lambda *args: print("ready", flush=True)
client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
client.connect(host, port)
client.loop_start()
done.wait(float(sys.argv[5]))
client.disconnect()
client.loop_stop()
print(count, flush=True)
"""


class Receiver:
    """A paho subscriber (QoS 1) on ``<prefix>/#`` in another process, subscribed before the
    first publish (MQTT drops what nobody subscribes to): the check that every confirmed
    message reached a subscriber, out of the measured process."""

    def __init__(self, name: str, count: int) -> None:
        self.prefix = f"nk-bench-{uuid.uuid4().hex[:8]}-{name}-{next(_prefixes)}"
        self.count = count
        self.process = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, HOST, str(PORT), f"{self.prefix}/#",
                                         str(count), "120"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready", "the subscriber did not subscribe"

    def check(self) -> None:
        out, _ = self.process.communicate(timeout=180)
        received = int(out.split()[-1])
        assert received == self.count, f"the subscriber received {received} of {self.count} messages"


async def via_notifykit(n: int, dead_letters: Path) -> float:
    receiver = Receiver("notifykit", n)
    url = f"{URL}?topic={receiver.prefix}&block_timeout=600"
    start = time.perf_counter()
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters, close_timeout=600) as notifier:
        for i in range(n):
            await notifier.info(CTX, "backup.createprogress", {**PAYLOAD, "i": i})
    elapsed = time.perf_counter() - start
    stats = notifier.stats()["mqtt"]
    assert stats.sent == n and stats.dead_lettered == 0, stats
    await anyio.to_thread.run_sync(receiver.check)
    return elapsed


def raw_message(i: int) -> tuple[bytes, Properties]:
    """What a hand-written client sends: the same JSON body and properties as notifykit's json format."""
    message_id = str(uuid.uuid4())
    timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
    body = json.dumps({"message_id": message_id, "event_type": "backup.createprogress", "priority": "info",
                       "publisher_id": "bench", "timestamp": timestamp, "context": CTX,
                       "payload": {**PAYLOAD, "i": i}}, separators=COMPACT).encode()
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("event_type", "backup.createprogress"), ("priority", "info"), ("message_id", message_id)]
    properties.ContentType = "application/json"
    properties.PayloadFormatIndicator = 1
    return body, properties


def paho_thread_window(n: int) -> float:
    """The hand-written loop (runs in a worker thread of its own; paho's network thread reads PUBACKs)."""
    receiver = Receiver("paho", n)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    connected = threading.Event()
    window: list[int] = []

    def on_connect(client: paho.Client, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        window.append(int(getattr(properties, "ReceiveMaximum", 65535)))
        connected.set()

    acked = threading.Event()
    count = 0

    def on_publish(client: paho.Client, userdata: Any, mid: int, code: Any, properties: Any) -> None:
        nonlocal count
        assert not code.is_failure, code
        free.release()
        count += 1
        if count == n:
            acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.max_inflight_messages_set(0)  # the window is the semaphore's (paho rescans its queue per ack)
    client.connect(HOST, PORT)
    client.loop_start()
    try:
        assert connected.wait(10)
        free = threading.Semaphore(window[0])
        topic = f"{receiver.prefix}/info/backup.createprogress"
        start = time.perf_counter()
        for i in range(n):
            body, properties = raw_message(i)
            free.acquire()
            info = client.publish(topic, body, qos=1, properties=properties)
            assert info.rc == paho.MQTT_ERR_SUCCESS
        assert acked.wait(600)
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    receiver.check()
    return elapsed


async def via_transport(n: int) -> float:
    receiver = Receiver("transport", n)
    settings = TransportSettings.build("bench", parse_url(URL), WireFormat.JSON, (receiver.prefix,), {})
    transport = MqttTransport.from_settings(settings)
    size = MqttTransport.max_batch_size
    batches = [[Notification.create("backup.createprogress", {**PAYLOAD, "i": i}, publisher_id="bench", context=CTX)
                for i in range(first, min(n, first + size))] for first in range(0, n, size)]
    await transport.open()
    try:
        start = time.perf_counter()
        for batch in batches:
            await transport.send(batch)
        elapsed = time.perf_counter() - start
    finally:
        await transport.aclose()
    await anyio.to_thread.run_sync(receiver.check)
    return elapsed


def progress(what: str, rate: float) -> None:
    print(f"# {what}: {rate:.0f} msgs/s", file=sys.stderr, flush=True)


async def main() -> None:
    BROKER.start()
    try:
        await measure()
    finally:
        BROKER.stop()
        shutil.rmtree(BROKER.folder, ignore_errors=True)


async def measure() -> None:
    rounds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = Path(tmp) / "dl.jsonl"
        contenders: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("notifykit", lambda: via_notifykit(N, dead_letters)),
            ("transport_send_prebuilt", lambda: via_transport(N)),
            ("paho_thread_window", lambda: anyio.to_thread.run_sync(paho_thread_window, N)),
        ]
        await via_notifykit(2000, dead_letters)  # warm-up: code paths, the broker's first sessions
        await anyio.to_thread.run_sync(paho_thread_window, 2000)
        for number in range(ROUNDS):  # interleaved, so drift of a shared machine hits all alike
            for name, run in rotated(contenders, number):
                elapsed = await run()
                rounds.setdefault(name, []).append(N / elapsed)
                progress(name, N / elapsed)
    rates = {k: median(v) for k, v in rounds.items()}
    anchor = "paho_thread_window"
    ratio = paired_ratio(rounds["notifykit"], rounds[anchor])
    alone = paired_ratio(rounds["transport_send_prebuilt"], rounds[anchor])
    print(json.dumps({
        "benchmark": "mqtt_throughput",
        "n": N,
        "rounds": ROUNDS,
        "statistic": "median of interleaved rounds",
        "broker": "mosquitto (its own, on a free port; Receive Maximum 20 by default)",
        "msgs_per_s": {k: round(v) for k, v in rates.items()},
        "rounds_msgs_per_s": {k: [round(x) for x in v] for k, v in rounds.items()},
        "ratio_notifykit_vs_paho_window": round(ratio, 3),
        "ratio_transport_alone": round(alone, 3),
        "goals": [
            goal("PUBACK-confirmed msgs/s (QoS 1), tight caller loop, vs a hand-written paho loop with the same window",
                 ratio, ">=", 1.0, anchor=anchor, cause=CAUSE),
        ],
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
