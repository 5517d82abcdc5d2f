"""The S3 store's URL, options and error mapping, without Ceph: a local HTTP server that
throttles every request stands in for a busy S3 (tests/ceph has the real RGW)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from notifykit.backup import BackupConfig, BackupConfigError, BackupStatus
from notifykit.backup._s3 import S3ObjectStore
from notifykit.backup._setup import build_driver
from notifykit.backup.plugin import TransientObjectStoreError, store_from_url

from .helpers import CHUNK, backup_env

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def s3(url: str, options: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> S3ObjectStore:
    store = store_from_url(url, options, env or {})
    assert isinstance(store, S3ObjectStore)
    return store


def test_url_names_endpoint_bucket_prefix_and_credentials() -> None:
    store = s3(f"s3+http://AKID:{SECRET}@127.0.0.1:7480/backups/cinder/vols?uploads=8&region=eu-1")
    o = store.options
    assert (o.endpoint, o.bucket, o.prefix, o.region, o.uploads) == ("http://127.0.0.1:7480", "backups",
                                                                     "cinder/vols/", "eu-1", 8)
    assert (o.access_key, o.secret_key) == ("AKID", SECRET)
    assert store.default_uploads == 8 and store.name == "s3"
    assert store.location == "s3+http://127.0.0.1:7480/backups/cinder/vols/"
    tls = s3(f"s3://AKID:{SECRET}@s3.eu-west-1.amazonaws.com/b-1?prefix=x&create_bucket=yes")
    assert tls.options.endpoint == "https://s3.eu-west-1.amazonaws.com" and tls.options.prefix == "x/"
    assert tls.options.create_bucket and tls.options.retry.attempts == 5
    for text in (repr(store), repr(o), repr(tls)):
        assert SECRET not in text and "AKID" not in text


def test_credentials_from_aws_environment_and_toml_store_options(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "ENVID", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_SESSION_TOKEN": "tok",
           "AWS_DEFAULT_REGION": "us-west-2"}
    from_env = s3("s3://s3.example:443/bucket1", env=env).options
    assert (from_env.access_key, from_env.secret_key, from_env.session_token, from_env.region) == (
        "ENVID", "env-secret", "tok", "us-west-2")
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\nstore = "s3://rgw.example:8443/bucket1"\n'
                    f'[backup.store_options]\naccess_key = "TOMLID"\nsecret_key = "{SECRET}"\nuploads = 6\n')
    config = BackupConfig.load(toml, env={})
    driver = build_driver(config)
    assert isinstance(driver.store, S3ObjectStore)
    assert (driver.store.options.access_key, driver.store.options.secret_key) == ("TOMLID", SECRET)
    assert driver.uploads == 6 and driver.service == "backup.drivers.s3"
    assert SECRET not in repr(config) and SECRET not in repr(driver)


@pytest.mark.parametrize(("url", "message"), [
    ("s3://127.0.0.1:9000/bucket1", "s3 store needs credentials"),
    (f"s3://k:{SECRET}@127.0.0.1:9000/", "must look like s3://HOST"),
    (f"s3://k:{SECRET}@127.0.0.1:9000/Bad_Bucket", "not a valid bucket name"),
    (f"s3://k:{SECRET}@127.0.0.1:9000/bucket1?colour=red",
     r"s3 store: unknown option\(s\) 'colour' \(allowed: access_key, create_bucket, prefix, region, retry_attempts,"),
    (f"s3://k:{SECRET}@127.0.0.1:9000/bucket1?uploads=0", "uploads must be >= 1"),
    (f"s3://k:{SECRET}@127.0.0.1:9000/bucket1?create_bucket=maybe", "create_bucket must be true or false"),
])
def test_bad_s3_urls_are_one_clear_error_without_the_secret(url: str, message: str) -> None:
    with pytest.raises(BackupConfigError, match=message) as raised:
        store_from_url(url, env={})
    assert SECRET not in str(raised.value)


class SlowDownServer:
    """Answers every request 503 SlowDown, as S3 does when throttling; counts them per target
    (a backup has more than one object in flight: its chunks, its block list)."""

    BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>'

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.port = 0

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += await stream.receive()
            self.requests[head.split(b" ", 2)[1].decode()] += 1
            await stream.send(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))


@pytest.mark.asyncio
async def test_throttling_is_retried_then_given_up_with_the_503_in_fail_reason(tmp_path: Path) -> None:
    server = SlowDownServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    store = s3(f"s3+http://k:{SECRET}@127.0.0.1:{server.port}/bucket1?retry_attempts=3&retry_backoff=0.01")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        await store.open()
        try:
            async with backup_env(tmp_path, store=store) as env:
                with pytest.raises(TransientObjectStoreError, match=r"gave up after 3 attempt\(s\)"):
                    await env.service.create_backup(env.volume(CHUNK))
                record = (await env.service.list())[0]
        finally:
            await store.aclose()
            tg.cancel_scope.cancel()
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert "503 Service Unavailable (SlowDown)" in record.fail_reason and SECRET not in record.fail_reason
    # the object given up on had the store's own attempts, none had more; obstore's retries are off
    assert max(server.requests.values()) == 3, server.requests
