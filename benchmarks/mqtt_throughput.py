"""Confirmed MQTT 5 throughput: notifykit vs hand-written paho-mqtt QoS 1 loops with an in-flight window.

All against one Mosquitto started here on a free loopback port (its defaults, but
``max_queued_messages 0``: the machine's broker drops QoS 1 messages for a subscriber more
than 1,000 behind, which the check below would see as losses) and stopped by PID, in one
run, same payload, same topic layout (``<prefix>/info/backup.createprogress``) and the same
MQTT 5 properties (user properties event_type/priority/message_id, content type, payload
format indicator), each run on a prefix of its own with a paho subscriber (QoS 1, another
process) that must receive all N:

* ``notifykit``: ``await notifier.info(...)`` N times in a tight loop, timed until
  ``aclose()`` returned, i.e. until every PUBACK came (``stats.sent == N`` checked);
* ``paho_thread_window``: paho's own network thread (``loop_start``) reads the PUBACKs; the
  caller publishes each message as soon as fewer than W are unacknowledged (a semaphore
  released by ``on_publish``);
* ``paho_loop_window``: one thread, paho's own ``loop()`` (select) reading the PUBACKs
  between the publishes the freed window slots allow;
* ``transport_send_prebuilt`` (information): ``MqttTransport.send()`` alone, on batches of
  500 notifications created before the clock starts — the transport's own cost.

Both paho loops build each message as a hand-written client would (ANCHOR_PER_MESSAGE), with
W = the broker's Receive Maximum from CONNACK (Mosquitto's default 20), which is
notifykit's window too; the one with the best median is the anchor. Rounds are interleaved
(the order rotates each round); a rate is the median of its rounds, a ratio the median of
the per-round ratios. Usage: ``python benchmarks/mqtt_throughput.py [N [ROUNDS]]``
(defaults 20000 and 7).
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
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import paho.mqtt.client as paho
from _goals import goal, median, paired_ratio
from _throughput import EVENT, STATISTIC, Run, argv_int, best, interleaved, json_envelope, notify_loop, prebuilt, rates_json, send_all
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notifykit.transport import TransportSettings, WireFormat, parse_url
from notifykit.transports.mqtt import MqttTransport
from tests.mqtt.support import Mosquitto

N = argv_int(1, 20_000)
ROUNDS = argv_int(2, 7)
HOST = "127.0.0.1"
BROKER = Mosquitto(Path(tempfile.mkdtemp(prefix="nk-bench-mqtt-")), persistence=False)
PORT = BROKER.port
URL = f"mqtt://{HOST}:{PORT}/"
ANCHOR_PER_MESSAGE = (
    "uuid4 message id, UTC timestamp, the json envelope by json.dumps (_throughput.json_envelope), a paho "
    "Properties (user properties event_type/priority/message_id, content type, payload format indicator), "
    "client.publish(topic, body, qos=1, properties) once fewer than W are unacknowledged; the PUBACK's "
    "reason code checked in on_publish, which frees the slot")
CAUSE = ("see transport_send_prebuilt for the transport's own cost; end to end the caller's notify() also does "
         "the core's per-notification work (validation, payload JSON, id, timestamp, the queue hand-off) on the "
         "event loop's thread, between the turns in which the transport reads PUBACKs and refills its window")
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
        self.topic = f"{self.prefix}/info/{EVENT}"
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
    elapsed = await notify_loop(f"{URL}?topic={receiver.prefix}&block_timeout=600", n, dead_letters)
    await anyio.to_thread.run_sync(receiver.check)
    return n / elapsed


def raw_message(i: int) -> tuple[bytes, Properties]:
    """What a hand-written client sends: the same JSON body and properties as notifykit's json format."""
    message_id, body = json_envelope(i)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("event_type", EVENT), ("priority", "info"), ("message_id", message_id)]
    properties.ContentType = "application/json"
    properties.PayloadFormatIndicator = 1
    return body.encode(), properties


def new_client(window: list[int]) -> paho.Client:
    """A paho client whose CONNACK puts the broker's Receive Maximum into ``window``."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    client.on_connect = lambda client, userdata, flags, code, properties: window.append(
        int(getattr(properties, "ReceiveMaximum", 65535)))
    client.max_inflight_messages_set(0)  # the window is the loop's own (paho rescans its queue per ack)
    return client


def paho_thread_window(n: int) -> float:
    """paho's network thread reads the PUBACKs; this thread publishes when a semaphore slot is free."""
    receiver = Receiver("paho-thread", n)
    window: list[int] = []
    client = new_client(window)
    acked = threading.Event()
    count = 0

    def on_publish(client: paho.Client, userdata: Any, mid: int, code: Any, properties: Any) -> None:
        nonlocal count
        assert not code.is_failure, code
        free.release()
        count += 1
        if count == n:
            acked.set()

    client.on_publish = on_publish
    client.connect(HOST, PORT)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not window:
            assert time.monotonic() < deadline, "no CONNACK"
            time.sleep(0.001)
        free = threading.Semaphore(window[0])
        start = time.perf_counter()
        for i in range(n):
            body, properties = raw_message(i)
            free.acquire()
            assert client.publish(receiver.topic, body, qos=1, properties=properties).rc == paho.MQTT_ERR_SUCCESS
        assert acked.wait(600)
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    receiver.check()
    return n / elapsed


def paho_loop_window(n: int) -> float:
    """One thread: publish while the window has room, then paho's ``loop()`` reads the PUBACKs."""
    receiver = Receiver("paho-loop", n)
    window: list[int] = []
    client = new_client(window)
    free = acked = 0

    def on_publish(client: paho.Client, userdata: Any, mid: int, code: Any, properties: Any) -> None:
        nonlocal free, acked
        assert not code.is_failure, code
        free += 1
        acked += 1

    client.on_publish = on_publish
    client.connect(HOST, PORT)
    try:
        deadline = time.monotonic() + 10
        while not window:
            assert time.monotonic() < deadline, "no CONNACK"
            client.loop(0.1)
        free, sent = window[0], 0
        start = time.perf_counter()
        while acked < n:
            while free and sent < n:
                body, properties = raw_message(sent)
                free -= 1
                sent += 1
                assert client.publish(receiver.topic, body, qos=1, properties=properties).rc == paho.MQTT_ERR_SUCCESS
            assert client.loop(10) == paho.MQTT_ERR_SUCCESS
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
    receiver.check()
    return n / elapsed


async def via_transport(n: int) -> float:
    receiver = Receiver("transport", n)
    settings = TransportSettings.build("bench", parse_url(URL), WireFormat.JSON, (receiver.prefix,), {})
    elapsed = await send_all(MqttTransport.from_settings(settings), prebuilt(n, MqttTransport.max_batch_size))
    await anyio.to_thread.run_sync(receiver.check)
    return n / elapsed


async def main() -> None:
    BROKER.start()
    try:
        await measure()
    finally:
        BROKER.stop()
        shutil.rmtree(BROKER.folder, ignore_errors=True)


async def measure() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = Path(tmp) / "dl.jsonl"
        contenders: list[tuple[str, Run]] = [
            ("notifykit", lambda: via_notifykit(N, dead_letters)),
            ("transport_send_prebuilt", lambda: via_transport(N)),
            ("paho_thread_window", lambda: anyio.to_thread.run_sync(paho_thread_window, N)),
            ("paho_loop_window", lambda: anyio.to_thread.run_sync(paho_loop_window, N)),
        ]
        await via_notifykit(2000, dead_letters)  # warm-up: code paths, the broker's first sessions
        await anyio.to_thread.run_sync(paho_thread_window, 2000)
        await anyio.to_thread.run_sync(paho_loop_window, 2000)
        rounds = await interleaved(contenders, ROUNDS)
    anchor = best(rounds, "paho_")
    ratio = paired_ratio(rounds["notifykit"], rounds[anchor])
    print(json.dumps({
        "benchmark": "mqtt_throughput",
        "n": N,
        "rounds": ROUNDS,
        "statistic": STATISTIC,
        "broker": "mosquitto (its own, on a free port; Receive Maximum 20 by default)",
        "anchor_per_message": ANCHOR_PER_MESSAGE,
        **rates_json(rounds),
        "best_anchor": anchor,
        "ratio_notifykit_vs_best_paho_window": round(ratio, 3),
        "ratio_notifykit_vs_each_anchor": {k: round(paired_ratio(rounds["notifykit"], rounds[k]), 3)
                                           for k in rounds if k.startswith("paho_")},
        "ratio_transport_alone": round(paired_ratio(rounds["transport_send_prebuilt"], rounds[anchor]), 3),
        "goals": [
            goal("PUBACK-confirmed msgs/s (QoS 1), tight caller loop, vs the best hand-written paho loop with the "
                 "same window", ratio, ">=", 1.0, anchor=anchor, cause=CAUSE),
        ],
        "python": platform.python_version(),
    }, indent=2))
    print(f"# medians: { {k: round(median(v)) for k, v in rounds.items()} }", file=sys.stderr)


if __name__ == "__main__":
    anyio.run(main)
