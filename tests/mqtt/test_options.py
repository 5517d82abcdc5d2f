"""Options of mqtt:// checked when the Notifier is built; secrets never shown; the core untouched."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from notifykit import ConfigError, Notifier
from notifykit.transport import PermanentError
from notifykit.transports.mqtt import MqttTransport

from .support import free_port


def build(url: str) -> MqttTransport:
    transport = next(iter(Notifier.from_url(url, publisher_id="p").transports.values()))
    assert isinstance(transport, MqttTransport)
    return transport


def test_defaults_and_the_url() -> None:
    options = build("mqtt://u:s3cret@broker.example:1884,b2/?topic=site1/cinder").options
    assert options.hosts == (("broker.example", 1884), ("b2", 1883))
    assert (options.username, options.password, options.topics) == ("u", "s3cret", ("site1/cinder",))
    assert (options.qos, options.message_expiry, options.session_expiry, options.max_inflight) == (1, None, 300, 1000)
    assert options.client_id.startswith("notifykit-mqtt-") and options.generated_id
    assert build("mqtts://h/").options.hosts == (("h", 8883),)
    configured = build("mqtt://h/?client_id=cinder-backup-1&qos=2&message_expiry=60").options
    assert (configured.client_id, configured.generated_id, configured.qos, configured.message_expiry) == \
        ("cinder-backup-1", False, 2, 60)


@pytest.mark.parametrize(("query", "message"), [
    ("topic=a/%2B/b", r"topic 'a/\+/b' .* must be a topic prefix"),
    ("topic=a/%23", "must be a topic prefix"),
    ("topic=%24SYS/x", "must be a topic prefix"),
    ("topic=a/", "must be a topic prefix"),
    ("qos=0", "option 'qos' .* must be one of 1, 2"),
    ("max_inflight=0", "option 'max_inflight' .* must be >= 1"),
    ("keepalive=1", "option 'keepalive' .* must be >= 5"),
    ("message_expiry=-1", "option 'message_expiry' .* must be >= 0"),
    ("retain=true", "unknown option"),
])
def test_bad_options_are_one_clear_error(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(f"mqtt://127.0.0.1/?{query}")


def test_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes no path; name the topic prefix with"):
        build("mqtt://127.0.0.1/prefix")


@pytest.mark.asyncio
async def test_the_password_is_never_shown(dead_letter_path: Path) -> None:
    url = f"mqtt://user:s3cret-pw@127.0.0.1:{free_port()}/?connect_timeout=1&retry_initial_delay=0.01"
    notifier = Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, close_timeout=0)
    transport = notifier.transports["mqtt"]
    assert "s3cret-pw" not in repr(transport) and "s3cret-pw" not in repr(transport.options)
    async with notifier:
        await notifier.info({}, "x.y", {})
        with anyio.fail_after(10):
            while not notifier.stats()["mqtt"].last_error:
                await anyio.sleep(0.01)
        error = notifier.stats()["mqtt"].last_error
    assert error and "Connection refused" in error and "s3cret-pw" not in error
    assert "s3cret-pw" not in dead_letter_path.read_text()


@pytest.mark.asyncio
async def test_a_ca_file_that_does_not_load_is_one_permanent_error_in_the_toolkits_words(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    transport = build(f"mqtts://u:s3cret@127.0.0.1:{free_port()}/?ca_file={junk}")
    with pytest.raises(PermanentError, match=r"^MQTT mqtts://u:\*+@127\.0\.0\.1:\d+/.*: cannot load TLS files: ") as info:
        await transport.open()  # before any connection: a retry would not make the file load
    assert "s3cret" not in str(info.value)
