"""What a real Swift all-in-one cannot show: Keystone v3 auth and a 507 answer. These use
httpx.MockTransport as the server (no traffic at all), so they check the requests the store
builds and how it reads the answers -- not interoperability with a real Keystone."""

from __future__ import annotations

import json

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


async def test_keystone_v3_password_auth_request_and_catalog_endpoint() -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v3/auth/tokens":
            return httpx.Response(201, headers={"X-Subject-Token": "tok-1"}, json={"token": {"catalog": CATALOG}})
        return httpx.Response(201)

    options = SwiftOptions.from_url(KEYSTONE, {"project": "backups", "region": "RegionTwo",
                                               "user_domain": "users"})
    store = SwiftObjectStore(options, transport=httpx.MockTransport(server))
    try:
        await store.create_container("backup_1")
    finally:
        await store.aclose()
    auth, put = seen
    assert (auth.method, str(auth.url)) == ("POST", "http://127.0.0.1:5000/v3/auth/tokens")
    assert json.loads(auth.content) == {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "alice", "domain": {"name": "users"}, "password": "pw-s3cret"}}},
        "scope": {"project": {"name": "backups", "domain": {"name": "Default"}}},
    }}
    assert (put.method, str(put.url)) == ("PUT", "http://127.0.0.1:8083/v1/AUTH_p1/backup_1")
    assert put.headers["X-Auth-Token"] == "tok-1"


async def test_keystone_catalog_without_object_store_is_a_clear_error() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"X-Subject-Token": "t"}, json={"token": {"catalog": CATALOG[:1]}})

    store = SwiftObjectStore(SwiftOptions.from_url(KEYSTONE, {"project": "p"}), transport=httpx.MockTransport(server))
    try:
        with pytest.raises(ObjectStoreError, match="no public object-store endpoint") as raised:
            await store.create_container("backup_1")
    finally:
        await store.aclose()
    assert "pw-s3cret" not in str(raised.value)


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
