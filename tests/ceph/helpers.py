"""Helpers for the Ceph tests: an S3 store on the session's RGW, and a plain botocore client
(independent of S3ObjectStore) to look at what the backup service left in a bucket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import botocore.session
from botocore.config import Config

from notifykit.backup._s3 import S3ObjectStore
from notifykit.backup.plugin import store_from_url

from ..backup.helpers import Env, backup_env


def bucket_name(label: str) -> str:
    return f"nk-{label}-{uuid.uuid4().hex[:8]}"


def s3_client(aio: Any, secret: str | None = None) -> Any:
    info = aio.info()
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return botocore.session.Session().create_client(
        "s3", endpoint_url=info["endpoint"], region_name="us-east-1", aws_access_key_id=info["access_key"],
        aws_secret_access_key=secret or info["secret_key"], config=config)


def keys(aio: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (following pages), or [] for a missing bucket."""
    client = s3_client(aio)
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        names.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(names)


def s3_store(aio: Any, bucket: str, **options: Any) -> S3ObjectStore:
    options = {"retry_backoff": 0.05, **options}
    store = store_from_url(f"{aio.info()['s3_url']}/{bucket}", options)
    assert isinstance(store, S3ObjectStore)
    return store


@asynccontextmanager
async def s3_env(root: Path, store: S3ObjectStore, **kw: Any) -> AsyncIterator[Env]:
    """backup_env on an opened S3 store (its own uploads default), closed at the end."""
    await store.open()
    try:
        async with backup_env(root, store=store, uploads=kw.pop("uploads", store.default_uploads), **kw) as env:
            yield env
    finally:
        await store.aclose()


async def in_thread(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)
