"""Options and refusals: one clear error naming the option, credentials and TLS against servers of the tests' own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest
import trustme

from notifykit import ConfigError, Notifier
from notifykit.cli import main
from notifykit.transport import PermanentError, TransientError, TransportSettings, parse_url
from notifykit.transports.nats import NatsTransport, covers

from .support import Names, NatsServer, read_stream


def build(url: str) -> NatsTransport:
    transport = next(iter(Notifier.from_url(url, publisher_id="p").transports.values()))
    assert isinstance(transport, NatsTransport)
    return transport


def test_defaults_and_the_subject_from_the_one_topic() -> None:
    o = build("nats://127.0.0.1,10.0.0.2:4223/").options
    assert o.servers == ("nats://127.0.0.1:4222", "nats://10.0.0.2:4223")
    assert (o.stream, o.subject, o.storage, o.duplicate_window, o.create_stream) == (
        "NOTIFICATIONS", "notifications", "file", 120.0, True)
    assert build("nats://h/?topic=cinder.backups").options.subject == "cinder.backups"
    assert build("nats://h/?subject=a.b&stream=S-1").options.subject == "a.b"


@pytest.mark.parametrize(("query", "message"), [
    ("stream=a.b", r"option 'stream' of transport 'nats' .* must be a JetStream stream name"),
    ("subject=a.>", r"option 'subject' of transport 'nats' .*\(no wildcards\)"),
    ("subject=a..b", r"option 'subject'"),
    ("topics=a,b", r"NATS stores each notification once.*name one topic or set option 'subject'"),
    ("storage=disk", r"option 'storage' .* must be one of file, memory"),
    ("duplicate_window=0.5", r"option 'duplicate_window' .* must be >= 1, got 0.5"),
    ("nkey_seed=/nonexistent.nk", r"option 'nkey_seed' of transport 'nats' .*: no such file '/nonexistent.nk'"),
    ("cert_file=" + __file__, r"option\(s\) cert_file of transport .* need a TLS URL"),
    ("stream_name=X", r"unknown option\(s\) stream_name"),
])
def test_bad_options_are_one_clear_error(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Notifier.from_url(f"nats://127.0.0.1:4222/?{query}", publisher_id="p")


def test_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="a NATS URL takes no path"):
        Notifier.from_url("nats://127.0.0.1:4222/STREAM", publisher_id="p")


def test_nkey_and_creds_files_need_the_nkeys_package(tmp_path: Path) -> None:
    try:
        import nkeys  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        creds = tmp_path / "user.creds"
        creds.write_text("-----BEGIN NATS USER JWT-----\n")
        with pytest.raises(ConfigError, match=r"option 'creds_file' .* needs the 'nkeys' package: pip install nkeys"):
            Notifier.from_url(f"nats://127.0.0.1/?creds_file={creds}", publisher_id="p")
    else:
        pytest.skip("nkeys is installed")


def test_secrets_never_in_repr_or_options() -> None:
    transport = build("nats://svc:s3cret@127.0.0.1:4222/?token=t0ken")
    for text in (repr(transport), repr(transport.options), str(transport.classify(RuntimeError("s3cret t0ken")))):
        assert "s3cret" not in text and "t0ken" not in text
    assert build("nats://t0ken@127.0.0.1/").options.token == "t0ken"  # nats://TOKEN@host


def test_covers_reads_stream_subject_wildcards() -> None:
    assert covers(">", "a.b") and covers("a.>", "a") and covers("a.*.>", "a.b") and covers("a.b.>", "a.b")
    assert not covers("a.*", "a") and not covers("a.b.>", "a") and not covers("c.>", "a") and not covers("a", "a")


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[list[NatsServer]]:
    servers: list[NatsServer] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def deliver(url: str, dead_letters: Path, count: int = 5) -> Notifier:
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letters, close_timeout=30) as n:
        for i in range(count):
            await n.info({}, "backup.create.end", {"i": i})
    return n


@pytest.mark.broker
@pytest.mark.asyncio
async def test_user_and_password(tmp_path: Path, server_with: list[NatsServer], dead_letter_path: Path) -> None:
    server = NatsServer(tmp_path, "--user", "svc", "--pass", "s3cret")
    server_with.append(server)
    server.start()
    names = Names.unique()
    good = f"nats://svc:s3cret@{server.address}/?stream={names.stream}&subject={names.subject}"
    assert (await deliver(good, dead_letter_path)).stats()["nats"].sent == 5
    bad = build(f"nats://svc:wrong-s3cret@{server.address}/?stream={names.stream}&subject={names.subject}")
    with pytest.raises(PermanentError, match=r"(?i)authorization violation") as info:
        await bad.open()
    await bad.aclose()
    assert "wrong-s3cret" not in str(info.value) and "svc:***@" in str(info.value)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_token(tmp_path: Path, server_with: list[NatsServer], dead_letter_path: Path) -> None:
    server = NatsServer(tmp_path, "--auth", "t0ken-xyz")
    server_with.append(server)
    server.start()
    names = Names.unique()
    url = f"nats://{server.address}/?stream={names.stream}&subject={names.subject}&token=t0ken-xyz"
    assert (await deliver(url, dead_letter_path)).stats()["nats"].sent == 5
    nc = await nats.connect(f"nats://{server.address}", token="t0ken-xyz")
    try:
        assert (await nc.jetstream().stream_info(names.stream)).state.messages == 5
    finally:
        await nc.close()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_nats_tls_through_a_real_tls_listener(tmp_path: Path, server_with: list[NatsServer],
                                                    dead_letter_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    server = NatsServer(tmp_path, "--tls", "--tlscert", str(chain), "--tlskey", str(key))
    server_with.append(server)
    server.start()
    names = Names.unique()
    url = f"nats+tls://{server.address}/?stream={names.stream}&subject={names.subject}&ca_file={ca_file}"
    assert (await deliver(url, dead_letter_path)).stats()["nats+tls"].sent == 5
    untrusted = build(f"nats+tls://{server.address}/?stream={names.stream}&connect_timeout=2")
    with pytest.raises((TransientError, PermanentError), match=r"(?i)certificate"):
        await untrusted.open()
    await untrusted.aclose()


@pytest.mark.broker
def test_cli_tail_prints_what_the_stream_holds(machine_nats: str, names: Names, dead_letter_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://{machine_nats}/?stream={names.stream}&subject={names.subject}&format=oslo"
    anyio.run(deliver, url, dead_letter_path, 3)
    assert main(["tail", f"{url}&deliver_policy=all", "--json", "--limit", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["payload"]["i"] for m in lines] == [0, 1, 2]
    assert {m["format"] for m in lines} == {"oslo"}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_tail_starts_at_the_end_by_default(machine_nats: str, names: Names, dead_letter_path: Path) -> None:
    url = f"nats://{machine_nats}/?stream={names.stream}&subject={names.subject}"
    await deliver(url, dead_letter_path, 2)  # already in the stream: not shown
    parsed = parse_url(url)
    settings = TransportSettings.build("tail", parsed, NatsTransport.default_format, ("notifications",),
                                       {key: [value] for key, value in parsed.query})
    seen: list[int] = []
    with anyio.fail_after(20):
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as n:
            tail = NatsTransport.tail(settings)
            async with anyio.create_task_group() as tg:
                async def keep_emitting() -> None:
                    i = 100
                    while True:
                        await n.info({}, "backup.new", {"i": i})
                        i += 1
                        await anyio.sleep(0.05)

                tg.start_soon(keep_emitting)
                async for body in tail:
                    seen.append(json.loads(body)["payload"]["i"])
                    if len(seen) == 2:
                        break
                tg.cancel_scope.cancel()
            await tail.aclose()  # type: ignore[attr-defined]
    assert min(seen) >= 100
    assert len(await read_stream(machine_nats, names.stream)) >= 4
