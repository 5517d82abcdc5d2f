"""Helpers for the Swift tests: a direct Swift API client (independent of SwiftObjectStore)
to look at what the backup service left in Swift."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

from ..backup.helpers import Env, backup_env


class SwiftAPI:
    """Plain Swift API calls with TempAuth, for checking the store from outside."""

    def __init__(self, aio: Any) -> None:
        info = aio.info()
        self.auth_url, self.user, self.key = info["auth_url"], info["user"], info["key"]
        self.client = httpx.AsyncClient(trust_env=False, timeout=10)
        self.storage_url = ""
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> SwiftAPI:
        resp = await self.client.get(self.auth_url, headers={"X-Auth-User": self.user, "X-Auth-Key": self.key})
        resp.raise_for_status()
        self.storage_url = resp.headers["X-Storage-Url"]
        self.headers = {"X-Auth-Token": resp.headers["X-Auth-Token"]}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.client.request(method, f"{self.storage_url}/{path}", headers=headers, **kw)

    async def listing(self, container: str, prefix: str = "") -> list[str] | None:
        """Object names in the container, or None if it does not exist."""
        resp = await self.call("GET", container, params={"format": "json", "prefix": prefix})
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return [item["name"] for item in resp.json()] if resp.content else []


@asynccontextmanager
async def swift_env(root: Path, options: SwiftOptions, **kw: Any) -> AsyncIterator[Env]:
    """backup_env on a SwiftObjectStore (4 uploads in flight), connections closed at the end."""
    store = SwiftObjectStore(options)
    try:
        async with backup_env(root, store=store, uploads=kw.pop("uploads", 4), **kw) as env:
            yield env
    finally:
        await store.aclose()
