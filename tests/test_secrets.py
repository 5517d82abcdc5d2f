"""No secret in anything the tools write during fault scenarios.

Each scenario runs with known test secrets (a URL password, a header token, a signing
key, a broker password) against a peer that fails and echoes what it was sent; then
every file written under the test's directory, every log record, everything printed and
every repr is searched for each secret, in every encoding it was sent in.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import notifykit.backup.cli
import notifykit.cli
from notifykit import Notifier
from notifykit.backup._config import BackupConfig

from .helpers import FakeClock, require_tcp
from .webhook.receiver import Receiver, Reply

USER = "metering"
PASSWORD = "pw-Zq81-url-password"
HEADER_TOKEN = "hdr-Tk77-header-token"
SIGNING_KEY = "whsec-Lm42-signing-key"
BROKER_PASSWORD = "pw-Rb55-broker-password"
BASIC_TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, HEADER_TOKEN, SIGNING_KEY, BROKER_PASSWORD, BASIC_TOKEN)

#: What a receiver that quotes the request back says (as many error pages and proxies do).
ECHO = (f"rejected: Authorization: Basic {BASIC_TOKEN}; X-Api-Key: Bearer {HEADER_TOKEN}; "
        f"password={PASSWORD}; key {SIGNING_KEY}").encode()


def written(root: Path) -> str:
    """Every file under ``root``, as text whatever its encoding (SQLite files included)."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in sorted(root.rglob("*")) if p.is_file())


def leaks(*texts: str) -> list[str]:
    everything = "\n".join(texts)
    return [secret for secret in SECRETS if secret in everything]


@pytest.fixture
def echo_receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def webhook_url(receiver: Receiver, **options: str) -> str:
    query = "&".join([f"secret={SIGNING_KEY}", f"header=X-Api-Key:Bearer {HEADER_TOKEN}",
                      *(f"{k}={v}" for k, v in options.items())])
    return receiver.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "?" + query


@pytest.mark.asyncio
async def test_webhook_faults_write_no_secret(echo_receiver: Receiver, tmp_path: Path, fake_clock: FakeClock,
                                              caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    echo_receiver.script(Reply(500, body=ECHO), Reply(503, body=ECHO), Reply(400, body=ECHO))
    dead_letters = tmp_path / "dead.jsonl"
    url = webhook_url(echo_receiver, retry_max_attempts="5")
    n = Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letters, clock=fake_clock,
                          spool=tmp_path / "spool.sqlite3", status_path=tmp_path / "status.json")
    with caplog.at_level(logging.DEBUG):
        with anyio.fail_after(30):
            async with n:
                await n.info({"request_id": "req-1"}, "backup.create.end", {"size": 1})
                reprs = [repr(n), repr(n.transports["http"]), str(n.stats())]
        stats = n.stats()["http"]
        assert (stats.retried, stats.dead_lettered) == (2, 1)  # the faults happened, and were recorded
        assert echo_receiver.requests[0].headers["authorization"] == f"Basic {BASIC_TOKEN}"  # really sent
        # The CLI reading what was written: list, and status.
        for argv, code in ((["deadletters", "list", "--file", str(dead_letters)], 0),
                           (["deadletters", "list", "--json", "--file", str(dead_letters)], 0),
                           (["status", "--file", str(tmp_path / "status.json")], 0),
                           (["tail", url], 2)):  # http cannot be tailed: an error naming the URL
            assert await anyio.to_thread.run_sync(notifykit.cli.main, argv) == code
    printed = capsys.readouterr()
    assert "rejected: Authorization: Basic ***" in written(tmp_path)  # the echo is kept, scrubbed
    assert leaks(written(tmp_path), caplog.text, printed.out, printed.err, *reprs, str(stats.last_error)) == []


@pytest.mark.asyncio
@pytest.mark.broker
async def test_a_refused_broker_login_writes_no_secret(tmp_path: Path, fake_clock: FakeClock,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    require_tcp("127.0.0.1", 5672, "RabbitMQ")
    url = f"amqp://guest:{BROKER_PASSWORD}@127.0.0.1:5672/?retry_max_attempts=2"
    n = Notifier.from_url(url, publisher_id="p", dead_letters=tmp_path / "dead.jsonl", clock=fake_clock)
    with caplog.at_level(logging.DEBUG):
        async with n:
            await n.info({}, "backup.create.end", {"size": 1})
    assert n.stats()["amqp"].dead_lettered == 1
    assert leaks(written(tmp_path), caplog.text, repr(n), str(n.stats())) == []


def test_the_backup_cli_with_a_failing_notifier_writes_no_secret(echo_receiver: Receiver, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    echo_receiver.when(lambda request: True, Reply(401, body=ECHO))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    volume = tmp_path / "volume.img"
    volume.write_bytes(b"\x00" * 100_000)
    url = webhook_url(echo_receiver)
    common = ["--catalog", str(tmp_path / "catalog.sqlite3"), "--store", str(tmp_path / "objects"), "--notifier", url]
    assert notifykit.backup.cli.main(["create", str(volume), *common]) == 0  # a broken receiver never fails a backup
    assert notifykit.backup.cli.main(["list", *common]) == 0
    bad = url + "&no_such_option=1"
    assert notifykit.backup.cli.main(["create", str(volume), *common[:-1], bad]) != 0  # a config error naming the URL
    printed = capfd.readouterr()
    assert "no_such_option" in printed.err
    assert echo_receiver.requests, "the notifier never reached the receiver: nothing was tested"
    config = BackupConfig(notifier_url=url)
    assert leaks(written(tmp_path), printed.out, printed.err, repr(config)) == []


def test_backup_config_repr_hides_the_notifier_url_secrets() -> None:
    """Reproduction 7: BackupConfig's repr showed notifier_url's password and secret= in clear."""
    config = BackupConfig(notifier_url=f"https://{USER}:{PASSWORD}@hooks.example/n?secret={SIGNING_KEY}&batch=true")
    text = repr(config)
    assert PASSWORD not in text and SIGNING_KEY not in text
    assert f"notifier_url='https://{USER}:***@hooks.example/n?secret=***&batch=true'" in text
