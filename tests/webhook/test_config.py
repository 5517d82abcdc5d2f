"""Webhook URL and options: clear errors that never show a secret; Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from notifykit import ConfigError, Notifier, TransportConfig, WireFormat
from notifykit.transport import PermanentError
from notifykit.transports.webhook import WebhookTransport, parse_retry_after

SECRET = "Bearer sk-live-0123456789"


def build(url: str, tmp_path: Path) -> WebhookTransport:
    notifier = Notifier.from_url(url, publisher_id="p", dead_letters=tmp_path / "dl.jsonl")
    transport = notifier.transports[next(iter(notifier.transports))]
    assert isinstance(transport, WebhookTransport)
    return transport


def test_defaults(tmp_path: Path) -> None:
    t = build("https://hooks.example:8443/notify", tmp_path)
    assert t.target == "https://hooks.example:8443/notify"
    assert t.format is WireFormat.CLOUDEVENTS
    o = t.options
    assert (o.binary, o.batch, t.timeout, o.max_concurrency, t.max_batch_size) == (False, False, 10.0, 10, 1000)
    assert (o.tls.enabled, o.tls.verify, o.http2, o.follow_redirects) == (True, True, False, False)


def test_options_are_taken_out_of_the_target_url(tmp_path: Path) -> None:
    t = build("https://127.0.0.1:9/a/b?timeout=2.5&max_concurrency=4&max_batch=7&batch=true&http2=true&verify=false",
              tmp_path)
    assert t.target == "https://127.0.0.1:9/a/b"
    o = t.options
    assert (t.timeout, o.max_concurrency, t.max_batch_size, o.batch, o.http2, o.tls.verify) == (2.5, 4, 7, True, True, False)
    assert build("http://[::1]:8080", tmp_path).target == "http://[::1]:8080/"
    assert build("http://127.0.0.1:9/?batch=true", tmp_path).max_batch_size == 100


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mode=binary&format=json", "mode=binary needs format=cloudevents"),
        ("mode=binary&batch=true", "binary mode carries one event per request"),
        ("mode=fancy", "must be one of structured, binary"),
        ("timeout=soon", "'timeout' of transport 'http' .* must be a number"),
        ("max_concurrency=0", "must be >= 1"),
        ("header=NoColon", "'header' .* must be Name:Value"),
        ("header=Bad Name:x", "must be Name:Value with a valid header name"),
        ("header=Content-Type:text/plain", "header 'Content-Type' is set by the transport"),
        ("header=ce-id:1", "header 'ce-id' is set by the transport"),
        ("header=Notifykit-Signature:x", "is set by the transport"),
        ("secret=", "'secret' .* must not be empty"),
        ("key_file=/etc/hostname", "need a TLS URL"),
        ("verify=false", "option.s. verify of transport 'http' .* need a TLS URL"),
        ("colour=blue", "unknown option.*colour"),
    ],
)
def test_bad_options_name_the_problem(query: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        build(f"http://127.0.0.1:9/hook?{query}", tmp_path)


def test_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected exactly one host"):
        build("http://a:1,b:2/hook", tmp_path)
    with pytest.raises(ConfigError, match="expected exactly one host"):
        build("http:///hook", tmp_path)
    with pytest.raises(ConfigError, match=r"option\(s\) ca_file of transport 'http' .* need a TLS URL"):
        build(f"http://127.0.0.1:9/hook?ca_file={__file__}", tmp_path)
    with pytest.raises(ConfigError, match=r"no such file '/nonexistent/ca.pem'"):
        build("https://127.0.0.1:9/hook?ca_file=/nonexistent/ca.pem", tmp_path)
    with pytest.raises(ConfigError, match=r"'key_file' of transport 'https' .* needs 'cert_file'"):
        build(f"https://127.0.0.1:9/hook?key_file={__file__}", tmp_path)


def test_url_credentials_and_authorization_header_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Authorization is set both") as info:
        build("http://u:pw-1234@127.0.0.1:9/hook?header=authorization:Bearer tok-5678", tmp_path)
    assert "pw-1234" not in str(info.value) and "tok-5678" not in str(info.value)


def test_secrets_never_in_errors_or_reprs(tmp_path: Path) -> None:
    url = f"http://user:pw-9876@127.0.0.1:9/hook?header=X-Api-Key:{SECRET}&secret=whsec-abcdef"
    t = build(url, tmp_path)
    for text in (repr(t), repr(t.settings.url), t.settings.url.redacted):
        assert "sk-live" not in text and "whsec-abcdef" not in text and "pw-9876" not in text
    assert "header=***" in t.settings.url.redacted
    assert "sk-live" not in repr(TransportConfig.from_url(url))
    # Taken with the toolkit's secret helper: unsplit (a value may hold commas), never shown by a check.
    assert {"header", "secret"} <= t.settings.secrets and "whsec-abcdef" not in repr(t.options)
    options = build(f"{url}&header=X-List:a,b&secret=k,1", tmp_path).options
    assert (options.headers["X-List"], options.secrets) == ("a,b", ("whsec-abcdef", "k,1"))
    # An error quotes the URL (redacted by the core): the header value stays hidden there too.
    for bad in ("timeout=x", "header=Oops", "header=X-Y:a%0Db", "mode=binary&format=oslo", "nope=1", "queue_size=x"):
        with pytest.raises(ConfigError) as info:
            build(f"{url}&{bad}", tmp_path)
        message = str(info.value)
        assert "sk-live" not in message and "whsec-abcdef" not in message and "pw-9876" not in message, message


def test_http2_is_opt_in_and_needs_h2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h2" else real(name, *a))
    build("https://hooks.example/", tmp_path)  # HTTP/1.1 needs no h2
    with pytest.raises(ConfigError, match=r"HTTP/2 needs the 'h2' package.*notifykit\[webhook\]"):
        build("https://hooks.example/?http2=true", tmp_path)


@pytest.mark.asyncio
async def test_unloadable_client_certificate_is_permanent(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not a certificate")
    t = build(f"https://hooks.example/?cert_file={cert}", tmp_path)
    with pytest.raises(PermanentError) as info:  # a retry would not make the file load
        await t.open()
    assert "cannot set up TLS for https://hooks.example/" in str(info.value)


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("1.5", now) == 1.5
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now) == 90.0
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    for junk in (None, "", "-5", "soon", "Mon, 99 Foo 2026"):
        assert parse_retry_after(junk, now) is None
