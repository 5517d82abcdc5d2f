"""What a real Swift all-in-one cannot show: a 507 answer. These use httpx.MockTransport as
the server (no traffic at all), so they check how the store reads the answers. Keystone is
tested against a real one (tests/keystone)."""

from __future__ import annotations

import httpx
import pytest

from notifykit.backup import ObjectStoreError
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

pytestmark = pytest.mark.asyncio

KEYSTONE = "swift://alice:pw-s3cret@127.0.0.1:5000/v3"
CATALOG = [
    {"type": "identity", "endpoints": [{"interface": "public", "region": "RegionTwo", "url": "http://127.0.0.1:5000"}]},
    {"type": "object-store", "endpoints": [
        {"interface": "public", "region": "RegionOne", "url": "http://127.0.0.1:8081/v1/AUTH_p1"},
        {"interface": "internal", "region": "RegionTwo", "url": "http://127.0.0.1:8082/v1/AUTH_p1"},
        {"interface": "public", "region": "RegionTwo", "url": "http://127.0.0.1:8083/v1/AUTH_p1"},
    ]},
]


async def test_507_is_permanent_and_not_retried() -> None:
    calls: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "GET":  # TempAuth
            return httpx.Response(200, headers={"X-Storage-Url": "http://127.0.0.1:8080/v1/AUTH_t", "X-Auth-Token": "t"})
        return httpx.Response(507, text="<html><h1>Insufficient Storage</h1></html>")

    options = SwiftOptions.from_url("swift://t%3Au:k@127.0.0.1:8080/auth/v1.0", {"retry_backoff": 0})
    store = SwiftObjectStore(options, transport=httpx.MockTransport(server))
    try:
        with pytest.raises(ObjectStoreError, match="object store full: 507 Insufficient Storage on PUT backup_1/c-00000"):
            await store.put_object("backup_1", "c-00000", b"data")
    finally:
        await store.aclose()
    assert calls == ["GET", "PUT"]
