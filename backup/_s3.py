"""``s3`` object store: any S3 API (AWS S3, Ceph RGW, MinIO, …) through obstore.

obstore (the Rust ``object_store`` crate, async, requests signed with SigV4 by the crate)
moves the objects: measured against Ceph RGW on this machine it uploads 4 MiB chunks about
twice as fast as aiobotocore, whose payload signing and aiohttp writes run on the event loop.
Creating a missing bucket (``create_bucket=true``), which obstore cannot do, goes through
botocore in a worker thread.

Layout: ``s3://HOST[:PORT]/BUCKET[/PREFIX]`` — each backup's objects sit under
``PREFIX/backup_<id>/`` in one bucket. Every PUT is a single SigV4 request whose signature
covers the body's sha256 (``x-amz-content-sha256``, hashed by obstore in its own threads):
the server refuses a body that does not match (``XAmzContentSHA256Mismatch``, retried) before
storing it, as it does for boto3's PUTs. That one sha256 pass replaces the MD5 the store used
to compute for an ETag check after the fact: on CPUs with SHA extensions MD5 runs at 40 % of
sha256's speed.
Every GET is checked against its ETag (MD5), and restore checks every 32 KiB block against
the backup's block list. A caller that hands over an MD5 (``digests``) gets the answer's
ETag checked against it too.
5xx, throttling (SlowDown, 503, 429), timeouts and lost connections are retried by the
stores' one retry loop, ``StoreRetry``; 403, NoSuchBucket and other 4xx fail at once.
Credentials (URL, ``store_options`` or the AWS environment variables) never appear in
reprs, logs or errors.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import obstore
from obstore.store import S3Store

from ._errors import (
    BackupConfigError,
    CorruptBackupError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreFullError,
    PermanentObjectStoreError,
    TransientObjectStoreError,
)
from ._objectstore import ObjectDigests, validate_name
from ._retry import StoreRetry
from ._stores import StoreSettings

__all__ = ["S3ObjectStore", "S3Options"]

log = logging.getLogger("backup.s3")
_T = TypeVar("_T")

SCHEMES = {"s3": "https", "s3+https": "https", "s3+http": "http"}
# S3 throttles with 503 SlowDown under load and a gateway restart takes seconds: more tries
# than Swift's, the same capped backoff.
DEFAULT_RETRY = StoreRetry(attempts=5, backoff=0.5, max_backoff=8.0)
DEFAULT_UPLOADS = 4
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_STATUS = re.compile(r"status code: (\d{3})(?: ([^:<\n]*))?")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_RETRY_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                "ThrottlingException", "RequestTimeTooSkewed", "BadDigest", "XAmzContentSHA256Mismatch"}
_FULL_CODES = {"QuotaExceeded", "EntityTooLarge", "InsufficientCapacity", "UserSuspended"}


@dataclass(frozen=True, slots=True)
class S3Options:
    """Where and how to reach the bucket. The keys are secrets: left out of the repr."""

    endpoint: str
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    prefix: str = ""
    uploads: int = DEFAULT_UPLOADS
    create_bucket: bool = False
    virtual_hosted: bool = False
    retry: StoreRetry = DEFAULT_RETRY
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise BackupConfigError(f"s3 store: {self.bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
        if not self.access_key or not self.secret_key:
            raise BackupConfigError("s3 store needs credentials: ACCESS:SECRET@ in the URL, access_key/secret_key in"
                                    " store_options, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if self.uploads < 1:
            raise BackupConfigError(f"s3 store: uploads must be >= 1, got {self.uploads}")
        if not self.timeout > 0:
            raise BackupConfigError(f"s3 store: timeout must be > 0 seconds, got {self.timeout}")

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> S3Options:
        """``s3[+http]://[ACCESS:SECRET@]HOST[:PORT]/BUCKET[/PREFIX][?region=…&prefix=…&uploads=N&…]``."""
        scheme = SCHEMES.get(settings.scheme)
        bucket, _, path_prefix = settings.path.strip("/").partition("/")
        one_host = settings.url is not None and len(settings.url.hosts) == 1
        if scheme is None or not one_host or not bucket:
            raise BackupConfigError(f"s3 store URL must look like s3://HOST[:PORT]/BUCKET, got {settings.location}")
        env = settings.env
        prefix = settings.take_str("prefix", path_prefix) or ""
        return cls(
            endpoint=f"{scheme}://{settings.netloc}",
            bucket=bucket,
            access_key=settings.take_str("access_key", settings.username or env.get("AWS_ACCESS_KEY_ID")) or "",
            secret_key=settings.take_secret("secret_key", settings.password or env.get("AWS_SECRET_ACCESS_KEY")) or "",
            session_token=settings.take_secret("session_token", env.get("AWS_SESSION_TOKEN")),
            region=settings.take_str("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")) or "us-east-1",
            prefix=f"{prefix.strip('/')}/" if prefix.strip("/") else "",
            uploads=settings.take_int("uploads", DEFAULT_UPLOADS),
            create_bucket=settings.take_bool("create_bucket", False),
            virtual_hosted=settings.take_bool("virtual_hosted", False),
            retry=settings.take_retry(DEFAULT_RETRY),
            timeout=settings.take_float("timeout", 60.0, minimum=0, above=True),
        )


def _describe(exc: BaseException) -> tuple[int | None, str | None, str]:
    """(HTTP status, S3 error code, a one-line reason) from an obstore or botocore error,
    built from the status and code only: never the request, its headers or its URL."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        return status, code, f"{status} {code}"
    text = str(exc)
    match = _STATUS.search(text)
    code_match = _CODE.search(text)
    code = code_match.group(1) if code_match else None
    if match:
        status = int(match.group(1))
        phrase = (match.group(2) or "").strip()
        return status, code, f"{status} {phrase}".strip() + (f" ({code})" if code else "")
    first = text.split("\n", 1)[0]
    detail = first.rsplit(" - ", 1)[-1] if " - " in first else type(exc).__name__
    if "timed out" in first.lower() or "timeout" in first.lower():
        return None, None, f"timed out ({detail})"
    return None, None, f"connection failed ({detail[:200]})"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class S3ObjectStore:
    """The ObjectStore protocol on one S3 bucket; used between ``open()`` and ``aclose()``."""

    name = "s3"
    # Empty: the signed payload's sha256 (obstore's) is the check, so the driver hashes nothing for us.
    object_digests: tuple[str, ...] = ()

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._store: S3Store | None = None
        self._bucket_checked = False
        self._bucket_lock = anyio.Lock()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> S3ObjectStore:
        return cls(S3Options.from_settings(settings))

    @property
    def default_uploads(self) -> int:
        return self.options.uploads

    @property
    def location(self) -> str:
        scheme = "s3+http" if self.options.endpoint.startswith("http://") else "s3"
        host = self.options.endpoint.split("://", 1)[1]
        return f"{scheme}://{host}/{self.options.bucket}/{self.options.prefix}"

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.location!r})"

    async def open(self) -> None:
        opts = self.options
        config: dict[str, Any] = {"endpoint": opts.endpoint, "access_key_id": opts.access_key,
                                  "secret_access_key": opts.secret_key, "region": opts.region,
                                  "virtual_hosted_style_request": opts.virtual_hosted,
                                  # the body's sha256 is signed: the server checks it before storing
                                  "unsigned_payload": False}
        if opts.session_token:
            config["session_token"] = opts.session_token
        client = {"allow_http": opts.endpoint.startswith("http://"), "timeout": timedelta(seconds=opts.timeout),
                  "connect_timeout": timedelta(seconds=min(opts.timeout, 10.0))}
        # max_retries 0: StoreRetry retries, so attempts, waits and give-up reasons are ours.
        self._store = S3Store(opts.bucket, config=config, client_options=client,  # type: ignore[arg-type]
                              retry_config={"max_retries": 0})

    async def aclose(self) -> None:
        self._store = None  # obstore's connection pool closes with the object

    # -- plumbing ---------------------------------------------------------------------

    def _s3(self) -> S3Store:
        if self._store is None:
            raise PermanentObjectStoreError("s3 store used before open()")
        return self._store

    def _key(self, container: str, name: str | None = None) -> str:
        validate_name("container", container)
        if name is None:
            return f"{self.options.prefix}{container}/"
        return f"{self.options.prefix}{container}/{validate_name('object', name)}"

    def _failure(self, exc: Exception, where: str) -> ObjectStoreError:
        """obstore's and botocore's errors, mapped by status and S3 error code (never by message text
        that could hold the request); TransientObjectStoreError is what the retry loop tries again."""
        status, code, reason = _describe(exc)
        bucket = self.options.bucket
        if code == "NoSuchBucket":
            return PermanentObjectStoreError(f"{where}: bucket {bucket!r} does not exist at {self.options.endpoint}"
                                             " (create it, or add create_bucket=true to the store URL)")
        if code == "NoSuchKey" or (status == 404 and code is None):
            return ObjectNotFoundError(f"{where}: object not found ({reason})")
        if status in (401, 403):
            return PermanentObjectStoreError(f"{where}: access denied ({reason}): check the access key and secret"
                                             f" key, and that they may use bucket {bucket!r}")
        if code in _FULL_CODES or status == 507:
            return ObjectStoreFullError(f"{where}: the store is full or the object too large ({reason})")
        if status is None or status >= 500 or status in (408, 429) or code in _RETRY_CODES:
            return TransientObjectStoreError(reason)
        return PermanentObjectStoreError(f"{where}: {reason}")

    async def _call(self, action: str, what: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``attempt()`` under the store's retry policy; failures mapped to the ObjectStoreError family."""
        return await self.options.retry.call("s3", action, what, attempt, classify=self._failure)

    # -- the bucket (botocore: obstore does not create buckets) ---------------------------

    def _ensure_bucket_blocking(self) -> None:
        import botocore.session  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        opts = self.options
        config = Config(retries={"max_attempts": 1}, connect_timeout=min(opts.timeout, 10.0), read_timeout=opts.timeout,
                        s3={"addressing_style": "virtual" if opts.virtual_hosted else "path"},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        client = botocore.session.Session().create_client(
            "s3", endpoint_url=opts.endpoint, region_name=opts.region, aws_access_key_id=opts.access_key,
            aws_secret_access_key=opts.secret_key, aws_session_token=opts.session_token, config=config)
        try:
            client.head_bucket(Bucket=opts.bucket)
            return
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
        kwargs: dict[str, Any] = {"Bucket": opts.bucket}
        if opts.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": opts.region}
        try:
            client.create_bucket(**kwargs)
            log.info("s3: created bucket %r at %s", opts.bucket, opts.endpoint)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                raise

    async def _ensure_bucket(self) -> None:
        async with self._bucket_lock:
            if self._bucket_checked or not self.options.create_bucket:
                return
            await self._call("create bucket", repr(self.options.bucket),
                             lambda: anyio.to_thread.run_sync(self._ensure_bucket_blocking))
            self._bucket_checked = True

    # -- ObjectStore ----------------------------------------------------------------------

    async def create_container(self, container: str) -> None:
        """A backup's "container" is its key prefix: nothing to create but the bucket (option)."""
        self._key(container)
        await self._ensure_bucket()

    async def delete_container(self, container: str) -> None:
        left = await self.list_objects(container)
        if left:
            raise PermanentObjectStoreError(f"s3: cannot delete {self._key(container)}: {len(left)} object(s) left")

    async def put_object(self, container: str, name: str, data: bytes, *,
                         digests: ObjectDigests | None = None) -> None:
        """The server checks the body against its signed sha256. ``digests``: an MD5 of
        ``data`` the caller has anyway, checked against the answer's ETag as well."""
        key = self._key(container, name)
        md5 = digests.md5 if digests is not None else None

        async def once() -> None:
            result = await obstore.put_async(self._s3(), key, data, attributes={"Content-Type": "application/octet-stream"},
                                             use_multipart=False)
            etag = (result.get("e_tag") or "").strip('"')
            if md5 is not None and etag != md5:  # what arrived is not what we sent: send it again
                raise TransientObjectStoreError(f"ETag {etag!r} of the stored object is not the MD5 {md5!r} of the body sent")

        await self._call("store object", f"{self.options.bucket}/{key}", once)

    async def get_object(self, container: str, name: str) -> bytes:
        key = self._key(container, name)

        async def once() -> tuple[bytes, str]:
            result = await obstore.get_async(self._s3(), key)
            data = bytes(await result.bytes_async())
            return data, str(result.meta.get("e_tag") or "").strip('"')

        data, etag = await self._call("read object", f"{self.options.bucket}/{key}", once)
        if etag and "-" not in etag and etag != await anyio.to_thread.run_sync(_md5, data):
            raise CorruptBackupError(f"object {self.options.bucket}/{key} read from s3 does not match its ETag (MD5)")
        return data

    async def delete_object(self, container: str, name: str) -> None:
        """S3 answers 204 for a key that is already gone: done either way."""
        key = self._key(container, name)
        await self._call("delete object", f"{self.options.bucket}/{key}",
                         lambda: obstore.delete_async(self._s3(), key))

    async def list_objects(self, container: str) -> list[str]:
        """Every object under the backup's prefix, following S3's pages (continuation tokens)."""
        prefix = self._key(container)

        async def once() -> list[str]:
            names: list[str] = []
            async for page in obstore.list(self._s3(), prefix=prefix, chunk_size=1000):
                names.extend(str(meta["path"])[len(prefix):] for meta in page)
            return names

        return sorted(await self._call("list", f"{self.options.bucket}/{prefix}", once))

    async def sync_container(self, container: str) -> None:
        """Nothing to do: S3 answers 200 to a PUT only once the object is stored durably."""
