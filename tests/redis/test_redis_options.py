"""The redis:// options and the classification of Redis's answers, without a server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import redis.exceptions

from notifykit import ConfigError, Notifier
from notifykit.transport import PermanentError, TransientError, TransportSettings, WireFormat, parse_url
from notifykit.transports.redis import RedisOptions, RedisTransport


def build(url: str, **options: str) -> RedisTransport:
    settings = TransportSettings.build("r", parse_url(url), WireFormat.JSON, ("notifications",), options)
    return RedisTransport.from_settings(settings)


def test_defaults_and_the_url_parts() -> None:
    o = build("redis://127.0.0.1").options
    assert (o.host, o.port, o.db, o.streams, o.maxlen, o.maxlen_approximate, o.tls.enabled) == (
        "127.0.0.1", 6379, 0, ("notifications",), None, True, False)
    o = build("rediss://alice:s3cret-pw@cache.example:6380/3", stream="events", maxlen="5000",
              maxlen_approximate="false", ca_file=__file__).options
    assert (o.host, o.port, o.db, o.username, o.password, o.streams, o.maxlen, o.maxlen_approximate) == (
        "cache.example", 6380, 3, "alice", "s3cret-pw", ("events",), 5000, False)
    assert (o.tls.enabled, o.tls.ca_file) == (True, __file__)
    assert "s3cret" not in repr(o) and "s3cret" not in repr(build("redis://:s3cret-pw@h/0"))


@pytest.mark.parametrize(("url", "options", "error"), [
    ("redis://h/zero", {}, r"the URL path is the database number .*got '/zero'"),
    ("redis://a:1,b:2/0", {}, r"one host only \(Sentinel and Cluster are not supported\)"),
    ("redis://h/0", {"maxlen": "0"}, r"option 'maxlen' .* must be >= 1"),
    ("redis://h/0", {"maxlen_approximate": "maybe"}, r"option 'maxlen_approximate' .* must be true or false"),
    ("redis://h/0", {"stream": ""}, r"option 'stream' .* must be a non-empty key name"),
    ("redis://h/0", {"tail_from": "middle"}, r"option 'tail_from' .* must be one of latest, earliest"),
    ("redis://h/0", {"cert_file": __file__}, r"option\(s\) cert_file .* need a TLS URL"),
    ("redis://h/0", {"streams": "x"}, r"unknown option\(s\) streams"),
    ("redis://h/0", {"client_name": "my app"}, r"option 'client_name' .* must be printable ASCII without spaces"),
])
def test_bad_options_are_one_clear_error(url: str, options: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build(url, **options)


def test_the_default_client_name_is_one_redis_accepts() -> None:
    settings = TransportSettings.build("my redis", parse_url("redis://h/0"), WireFormat.JSON, ("notifications",), {})
    assert RedisTransport.from_settings(settings).options.client_name == "notifykit-my-redis"


def test_stream_and_topic_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="give the stream key with 'stream' or with 'topic', not both"):
        Notifier.from_url("redis://127.0.0.1:6379/0?stream=a&topic=b", publisher_id="p")
    transport = Notifier.from_url("redis://127.0.0.1:6379/0?topic=a&topic=b", publisher_id="p").transports["redis"]
    assert isinstance(transport.options, RedisOptions) and transport.options.streams == ("a", "b")


def error(code: str, text: str) -> redis.exceptions.RedisError:
    """What redis-py's parser makes of the server's ``-CODE text`` answer."""
    from redis._parsers.base import BaseParser

    return BaseParser.parse_error(f"{code} {text}")  # type: ignore[no-any-return]


@pytest.mark.parametrize(("answer", "kind"), [
    ("OOM command not allowed when used memory > 'maxmemory'.", TransientError),
    ("READONLY You can't write against a read only replica.", TransientError),
    ("LOADING Redis is loading the dataset in memory", TransientError),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", TransientError),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", TransientError),
    ("BUSY Redis is busy running a script.", TransientError),
    ("ERR max number of clients reached", TransientError),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", PermanentError),
    ("NOSCRIPT No matching script. Please use EVAL.", PermanentError),
    ("NOPERM User notifier has no permissions to run the 'xadd' command", PermanentError),
    ("WRONGPASS invalid username-password pair or user is disabled.", PermanentError),
    ("NOAUTH Authentication required.", PermanentError),
    ("ERR unknown command 'XADD', with args beginning with: ", PermanentError),
    ("MOVED 3999 127.0.0.1:6381", PermanentError),
])
def test_each_refusal_is_classified_with_the_servers_own_words(answer: str, kind: type[Exception]) -> None:
    transport = build("redis://:topsecret@127.0.0.1:6379/0")
    code, _, text = answer.partition(" ")
    classified = transport.classify(error(code, text), "events")
    assert type(classified) is kind
    assert str(classified) == f"redis redis://:***@127.0.0.1:6379/0 stream 'events': {answer}"


def test_client_side_failures_are_transient_and_never_show_the_password() -> None:
    transport = build("redis://:topsecret@127.0.0.1:6379/0", command_timeout="2")
    refused = transport.classify(redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. topsecret"))
    assert isinstance(refused, TransientError) and "topsecret" not in str(refused) and "Error 111" in str(refused)
    timeout = transport.classify(redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert isinstance(timeout, TransientError) and "command_timeout=2s" in str(timeout)


def test_outside_asyncio_open_is_a_clear_permanent_error() -> None:
    """Under trio (any loop but asyncio's) redis.asyncio cannot run: one clear error, not a traceback."""
    coroutine = build("redis://:topsecret@127.0.0.1:6379/0").open()
    with pytest.raises(PermanentError, match=r"^redis redis://:\*\*\*@127.0.0.1:6379/0: redis-py's client runs only "
                                             r"under asyncio; run the Notifier on anyio's asyncio backend$"):
        coroutine.send(None)  # driven by hand, with no event loop running


def test_without_redis_py_the_error_says_which_extra_to_install() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["redis"] = None  # as if redis-py were not installed
        from notifykit import ConfigError, Notifier
        try:
            Notifier.from_url("redis://:pw-never-shown@127.0.0.1:6379/0", publisher_id="p")
        except ConfigError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("transport 'redis' is installed but cannot import 'redis.asyncio'; "
                                     "install it with: pip install 'notifykit[redis]'")
