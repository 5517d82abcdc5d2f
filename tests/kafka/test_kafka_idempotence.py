"""``enable_idempotence``: how the option is parsed and handed to aiokafka, and what Tansu answers.

Tansu 0.6 serves InitProducerId only to requests carrying producer_id/epoch -1 (v3 and
later); aiokafka 0.14 sends v0, so Tansu answers UNKNOWN_SERVER_ERROR (-1) and the
idempotent producer cannot start there. The transport turns that into one permanent
error naming the option (docs/transports/kafka.md, "Idempotent producer"). The last test
asks for the id with v3 (a test-only patch of aiokafka's request) to check what the
option is for: a batch resent after a lost acknowledgement is written once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from aiokafka.producer import sender as aiokafka_sender  # type: ignore[import-untyped]
from aiokafka.protocol.api import Request, RequestStruct, Response  # type: ignore[import-untyped]
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields  # type: ignore[import-untyped]

from notifykit import ConfigError, Notification, Notifier, WireFormat
from notifykit.deadletters import read_dead_letters
from notifykit.transport import PermanentError, TransientError, TransportSettings, parse_url
from notifykit.transports.kafka import KafkaOptions, KafkaTransport

from ..helpers import unavailable
from .proxy import AckDroppingProxy
from .records import consume, create_topic, unique_topic
from .tansu import Tansu, TansuUnavailable, free_port


def options(url: str) -> KafkaOptions:
    parsed = parse_url(url)
    query: dict[str, list[str]] = {}
    for key, value in parsed.query:
        query.setdefault(key, []).append(value)
    return KafkaTransport.from_settings(TransportSettings.build("kafka", parsed, WireFormat.JSON, ("n",), query)).options


@pytest.mark.parametrize(
    ("query", "idempotence", "acks"),
    [
        ("", True, "all"),
        ("enable_idempotence=true", True, "all"),
        ("enable_idempotence=yes&acks=-1", True, "all"),
        ("enable_idempotence=false", False, "all"),
        ("enable_idempotence=off&acks=1", False, 1),
        ("enable_idempotence=0&acks=0", False, 0),
    ],
)
def test_enable_idempotence_is_parsed_with_its_acks(query: str, idempotence: bool, acks: int | str) -> None:
    producer = options(f"kafka://k/?{query}").producer
    assert (producer["enable_idempotence"], producer["acks"]) == (idempotence, acks)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("acks=1", "enable_idempotence=true needs acks=all (got acks=1; idempotence is on by default: "
                   "add enable_idempotence=false to use acks=1)"),
        ("enable_idempotence=true&acks=0", "enable_idempotence=true needs acks=all (got acks=0;"),
        ("enable_idempotence=maybe", "option 'enable_idempotence' of transport 'kafka'"),
    ],
)
def test_enable_idempotence_conflicts_are_one_config_error(query: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        options(f"kafka://svc:s3cret@k/?{query}")
    assert message in str(info.value) and "s3cret" not in str(info.value)


@pytest.mark.asyncio
async def test_aiokafka_takes_the_producer_options_and_shares_the_acks_rule() -> None:
    """What ConfigError guards against is aiokafka's own rule (it raises ValueError at construction)."""
    for query in ("", "enable_idempotence=false&acks=1"):
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options(f"kafka://k/?{query}").producer)
        assert (producer._txn_manager is not None) is (query == "")  # the idempotent producer's state
        await producer.stop()
    with pytest.raises(ValueError, match="acks=1 not supported if enable_idempotence=True"):
        AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=True, acks=1)


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.UnknownError(),  # Tansu's answer
        kafka_errors.UnsupportedVersionError(),
        kafka_errors.IncompatibleBrokerVersion("InitProducerIdRequest cannot be used if the API version is unknown"),
        kafka_errors.ClusterAuthorizationFailedError(),  # no IdempotentWrite ACL (Kafka before 2.8)
    ],
)
def test_a_refused_producer_id_is_permanent_and_names_the_option(error: Exception) -> None:
    transport = KafkaTransport.from_settings(
        TransportSettings.build("kafka", parse_url("kafka://svc:s3cret@k/"), WireFormat.JSON, ("n",), {}))
    refused = transport._open_error(error)
    assert type(refused) is PermanentError
    assert "enable_idempotence=true, but the broker refused the idempotent producer" in str(refused)
    assert "set enable_idempotence=false" in str(refused) and str(error) in str(refused)
    assert "s3cret" not in str(refused)


def test_open_errors_unrelated_to_idempotence_keep_their_class() -> None:
    off = KafkaTransport.from_settings(TransportSettings.build(
        "kafka", parse_url("kafka://k/"), WireFormat.JSON, ("n",), {"enable_idempotence": ["false"]}))
    on = KafkaTransport.from_settings(TransportSettings.build("kafka", parse_url("kafka://k/"), WireFormat.JSON, ("n",), {}))
    for transport, error in ((off, kafka_errors.UnknownError()), (on, kafka_errors.KafkaConnectionError("refused"))):
        classified = transport._open_error(error)
        assert type(classified) is TransientError and "enable_idempotence" not in str(classified)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_tansu_refuses_the_idempotent_producer_with_one_permanent_error(kafka_broker: Tansu) -> None:
    """The broker's real answer to aiokafka's InitProducerId, as the operator sees it from open()."""
    parsed = parse_url(f"kafka://{kafka_broker.bootstrap}/")
    transport = KafkaTransport.from_settings(
        TransportSettings.build("kafka", parsed, WireFormat.JSON, ("t",), {"request_timeout_ms": ["3000"]}))
    with anyio.fail_after(30), pytest.raises(PermanentError) as info:
        await transport.open()
    assert str(info.value) == (
        f"kafka kafka://{kafka_broker.bootstrap}/: enable_idempotence=true, but the broker refused the idempotent producer "
        "(InitProducerId answered [Error -1] UnknownError: An unexpected server error.); use a broker that serves "
        "idempotent producers (Kafka 0.11 or later; IdempotentWrite on the cluster where ACLs are on) "
        "or set enable_idempotence=false"
    )
    await transport.aclose()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_notifier_dead_letters_at_once_on_the_refusal_and_delivers_with_idempotence_off(
    kafka_broker: Tansu, dead_letter_path: Path
) -> None:
    """No retry loop on a refusal no retry can change: each batch is dead-lettered with the reason,
    notify() is not disturbed, and the same URL with enable_idempotence=false delivers."""
    topic = unique_topic()
    url = f"kafka://{kafka_broker.bootstrap}/?topic={topic}&request_timeout_ms=3000"
    with anyio.fail_after(60):
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as n:
            refused = await n.info({}, "backup.create.start", {"backup_id": "b-1"})
            while n.stats()["kafka"].dead_lettered < 1:  # the first batch is decided before the next one
                await anyio.sleep(0.01)
            again = await n.info({}, "backup.create.end", {"backup_id": "b-1"})
        stats = n.stats()["kafka"]
        assert (stats.sent, stats.dead_lettered) == (0, 2)
        assert stats.last_error is not None and "set enable_idempotence=false" in stats.last_error
        letters = list(read_dead_letters(dead_letter_path))
        assert [letter["message"]["message_id"] for letter in letters] == [refused.message_id, again.message_id]
        assert all("permanent error" in letter["reason"] and "UnknownError" in letter["reason"] for letter in letters)

        async with Notifier.from_url(f"{url}&enable_idempotence=false", publisher_id="p",
                                     dead_letters=dead_letter_path) as n:
            sent = await n.info({}, "backup.create.start", {"backup_id": "b-1"})
        assert n.stats()["kafka"].sent == 1
        [record] = await consume(kafka_broker.bootstrap, [f"{topic}.info"], 1)
        assert dict(record.headers)["message_id"] == sent.message_id.encode()


class _InitPidResponseV3(Response):  # type: ignore[misc]
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(("throttle_time_ms", Int32), ("error_code", Int16), ("producer_id", Int64),
                    ("producer_epoch", Int16), ("tags", TaggedFields))


class _InitPidRequestV3Struct(RequestStruct):  # type: ignore[misc]
    API_KEY = 22
    API_VERSION = 3
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = _InitPidResponseV3
    SCHEMA = Schema(("transactional_id", CompactString("utf-8")), ("transaction_timeout_ms", Int32),
                    ("producer_id", Int64), ("producer_epoch", Int16), ("tags", TaggedFields))


class _InitPidRequestV3(Request[_InitPidRequestV3Struct]):  # type: ignore[misc]
    """InitProducerId v3 for a new producer (producer_id = epoch = -1), what Tansu serves and Java clients send."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, timeout_ms: int) -> None:
        self._args = (transactional_id, timeout_ms)

    def build(self, request_struct_class: type[_InitPidRequestV3Struct]) -> _InitPidRequestV3Struct:
        return request_struct_class(*self._args, -1, -1, {})


@pytest.fixture
def init_pid_v3(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka asks for its producer id with InitProducerId v3 instead of v0, for this test only."""
    def create_request(handler: Any) -> _InitPidRequestV3:
        txn = handler._sender._txn_manager
        return _InitPidRequestV3(txn.transactional_id, txn.transaction_timeout_ms)
    monkeypatch.setattr(aiokafka_sender.InitPIDHandler, "create_request", create_request)


@pytest.mark.broker
@pytest.mark.asyncio
@pytest.mark.parametrize(("idempotence", "copies"), [("true", 1), ("false", 2)])
async def test_a_batch_resent_after_a_lost_acknowledgement_is_written_once_with_idempotence(
    tansu_binary: Path, tmp_path: Path, init_pid_v3: None, idempotence: str, copies: int
) -> None:
    """Tansu does keep an idempotent producer's sequence numbers once it has given the id (here
    through InitProducerId v3): the broker writes a batch, its acknowledgement is lost on the way
    back, aiokafka sends the same batch again and Tansu answers DuplicateSequenceNumber instead
    of appending it twice; send() succeeds. Without idempotence the batch fails transiently
    after request_timeout_ms, the core sends it again and the topic holds it twice."""
    proxy_port = free_port()
    broker = Tansu(tansu_binary, log_path=tmp_path / "tansu.log", advertised_port=proxy_port)
    try:
        broker.start()
    except TansuUnavailable as exc:
        unavailable(f"Kafka broker (tansu) unavailable: {exc}")
    topic = unique_topic()
    query = {"request_timeout_ms": ["1500"], "enable_idempotence": [idempotence]}
    transport = KafkaTransport.from_settings(TransportSettings.build(
        "kafka", parse_url(f"kafka://127.0.0.1:{proxy_port}/"), WireFormat.JSON, (topic,), query))
    batch = [Notification.create("backup.createprogress", {"backup_id": "b-1", "i": i}, publisher_id="p")
             for i in range(5)]
    try:
        with anyio.fail_after(60):
            async with AckDroppingProxy(proxy_port, broker.port, drop=1) as proxy:
                await create_topic(broker.bootstrap, f"{topic}.info", 1)
                await transport.open()
                try:
                    await transport.send(batch)
                except TransientError:
                    assert idempotence == "false"
                    await transport.send(batch)  # what the core's retry does
                await transport.aclose()
                assert (proxy.dropped, proxy.produce_requests) == (1, 2)
                records = await consume(broker.bootstrap, [f"{topic}.info"], 5 * copies)
                with pytest.raises(TimeoutError):  # and nothing more
                    await consume(broker.bootstrap, [f"{topic}.info"], 5 * copies + 1, timeout=2)
    finally:
        await transport.aclose()
        broker.stop()
    ids = [dict(r.headers)["message_id"].decode() for r in records]
    assert ids == [n.message_id for n in batch] * copies
