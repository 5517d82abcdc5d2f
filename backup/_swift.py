"""``swift`` object store: OpenStack Swift's object API over httpx, like Cinder's Swift driver.

Authentication is TempAuth (v1: ``GET /auth/v1.0`` with ``X-Auth-User``/``X-Auth-Key``) or
Keystone through keystoneauth1 (``_keystone.py``: password, application credential or
token; the ``object-store`` endpoint from the catalog). The token is fetched on first use
and renewed once when Swift answers 401 (``_swift_http.py``: the client, the token, one
call and its status mapping). Each backup gets its own
container ``backup_<id>``, or, with ``container`` set, one shared container in which each
backup's objects sit under the prefix ``backup_<id>/`` (Cinder's layout).

Every PUT carries the object's MD5 as ``ETag``: Swift refuses a body that does not match
(422, retried) and its answer's ETag is checked too; every GET is checked against its ETag.
The MD5 comes with the object from the chunked driver (``object_digests``: computed once,
in the worker that packs the chunk); other callers' objects are hashed here, in a worker
thread. No whole-object sha256 is sent: restore checks every 32 KiB block against the
backup's block list, so it would be a third pass over every byte; an
``X-Object-Meta-Sha256`` that objects of older backups carry is still checked on GET. 5xx answers,
timeouts and connection failures are retried by the stores' one retry loop, ``StoreRetry``
(bounded attempts, exponential backoff with jitter); 507 and 413 are permanent errors
with a message fit for ``fail_reason``. Credentials never appear in reprs, logs or error
messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx

from ._errors import (
    BackupConfigError,
    CorruptBackupError,
    ObjectNotFoundError,
    ObjectStoreError,
    PermanentObjectStoreError,
)
from ._keystone import KeystoneCredentials
from ._objectstore import ObjectDigests, validate_name
from ._retry import StoreRetry
from ._stores import StoreSettings
from ._swift_http import SwiftClient, SwiftSession

__all__ = ["SwiftObjectStore", "SwiftOptions"]

SCHEMES = {"swift": "http", "swift+http": "http", "swift+https": "https"}
_AUTH_VERSIONS = ("1", "3")
# Swift's own retry defaults: a proxy restart takes a few seconds.
DEFAULT_RETRY = StoreRetry(attempts=3, backoff=0.5)


@dataclass(frozen=True, slots=True)
class SwiftOptions:
    """Where and how to reach Swift. ``key`` is a secret: it is left out of the repr."""

    auth_url: str
    user: str
    key: str = field(repr=False)
    auth_version: str = "1"
    keystone: KeystoneCredentials | None = None
    container: str | None = None
    retry: StoreRetry = DEFAULT_RETRY
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.auth_version not in _AUTH_VERSIONS:
            raise BackupConfigError(f"swift store: auth_version must be 1 (TempAuth) or 3 (Keystone), got {self.auth_version!r}")
        if self.auth_version == "1" and (not self.user or not self.key):
            raise BackupConfigError("swift store needs a user and a key (USER:KEY@ in the URL, or user/key in"
                                    " store_options)")
        if self.auth_version == "3":
            if self.keystone is None:
                raise BackupConfigError("swift store: auth_version 3 (Keystone) needs credentials")
            self.keystone.check()
        if self.container is not None:
            try:
                validate_name("container", self.container)
            except ObjectStoreError as exc:
                raise BackupConfigError(f"swift store: container option: {exc}") from None
        if not self.timeout > 0:
            raise BackupConfigError(f"swift store: timeout must be > 0 seconds, got {self.timeout}")

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> SwiftOptions:
        """``swift[+https]://[USER[:KEY]@]HOST[:PORT][/AUTH_PATH][?container=…&auth_version=3&…]``.

        USER may hold ``%3A`` for TempAuth's ``account:user``; the ``user`` and ``key``
        options (from the TOML ``store_options`` table) win over the URL's. A path ending
        in ``/v3`` is Keystone. ``swift://`` without a host takes Keystone credentials from
        the ``cloud`` option or ``OS_CLOUD`` (clouds.yaml), else from the ``OS_*`` variables.
        """
        scheme = SCHEMES.get(settings.scheme)
        if scheme is None or settings.url is None or (settings.host and len(settings.url.hosts) != 1):
            raise BackupConfigError(f"swift store URL must look like swift://USER:KEY@HOST:PORT/auth/v1.0"
                                    f" (one host), got {settings.location}")
        path = settings.path.rstrip("/")
        version = settings.take_str("auth_version", "3" if path.endswith("/v3") or not settings.host else "1") or "1"
        if not path:
            path = "/v3" if version == "3" else "/auth/v1.0"
        user = settings.take_str("user", settings.username) or ""
        key = settings.take_secret("key", settings.password) or ""
        keystone: dict[str, str | None] = {
            "project_name": settings.take_str("project"), "project_id": settings.take_str("project_id"),
            "project_domain_name": settings.take_str("project_domain"),
            "user_domain_name": settings.take_str("user_domain"), "user_id": settings.take_str("user_id"),
            "application_credential_id": settings.take_str("application_credential_id"),
            "application_credential_name": settings.take_str("application_credential_name"),
            "application_credential_secret": settings.take_secret("application_credential_secret"),
            "token": settings.take_secret("token"),
        }
        cloud = settings.take_str("cloud")
        region, interface = settings.take_str("region"), settings.take_str("interface")
        credentials = None
        if version == "3":
            if cloud:
                credentials = KeystoneCredentials.from_cloud(cloud, settings.env)
            elif settings.host:
                credentials = KeystoneCredentials.from_mapping(
                    {**keystone, "auth_url": f"{scheme}://{settings.netloc}{path}", "username": user or None,
                     "password": key or None}, f"the store URL {settings.location}")
            else:
                credentials = KeystoneCredentials.from_env(settings.env)
                if credentials is None:
                    raise BackupConfigError("swift store without a host needs Keystone credentials: the cloud"
                                            " option, OS_CLOUD, or OS_AUTH_URL and the other OS_* variables")
            credentials = credentials.with_overrides(region_name=region, interface=interface)
        return cls(
            auth_url=credentials.auth_url if credentials else f"{scheme}://{settings.netloc}{path}",
            user=user or (credentials.who if credentials else ""),
            key=key,
            auth_version=version,
            keystone=credentials,
            container=settings.take_str("container"),
            retry=settings.take_retry(DEFAULT_RETRY),
            timeout=settings.take_float("timeout", 30.0, minimum=0, above=True),
        )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> SwiftOptions:
        """The options a ``swift://`` URL names, ``options`` over its query."""
        settings = StoreSettings.parse(url, options)
        swift = cls.from_settings(settings)
        settings.finish()
        return swift


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SwiftObjectStore:
    """The ObjectStore protocol on Swift. Call ``aclose()`` when done (closes connections)."""

    name = "swift"
    # Each chunk upload is a network round trip, so more overlap pays.
    default_uploads = 4
    # The ETag (MD5): taken from the driver, which hashes each chunk once.
    object_digests = ("md5",)

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> SwiftObjectStore:
        return cls(SwiftOptions.from_settings(settings))

    async def open(self) -> None:
        """Keystone: authenticate now, so the notifications' context can carry the user and
        project ids. TempAuth: nothing yet, the token comes with the first request."""
        if self._api.keystone is not None:
            await self._api.authenticate(None)

    def __init__(self, options: SwiftOptions, *, max_connections: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        self._api = SwiftClient(options, max_connections=max_connections, transport=transport)

    @property
    def _session(self) -> SwiftSession | None:
        """The current storage URL and token (the token-renewal tests compare it)."""
        return self._api.session

    @property
    def identity(self) -> dict[str, str]:
        """The Keystone user and project ids once authenticated (for the notifications' context)."""
        keystone = self._api.keystone
        if keystone is None or not keystone.user_id:
            return {}
        return {"user_id": keystone.user_id, "project_id": keystone.project_id or ""}

    def __repr__(self) -> str:
        shared = f", container={self.options.container!r}" if self.options.container else ""
        return f"SwiftObjectStore({self.options.auth_url!r}, user={self.options.user!r}{shared})"

    @property
    def location(self) -> str:
        """The auth URL, the (non-secret) user and the shared container: never the key."""
        query = f"?user={quote(self.options.user, safe='')}"
        if self.options.container:
            query += f"&container={quote(self.options.container, safe='')}"
        return f"{self.options.auth_url}{query}"

    async def aclose(self) -> None:
        await self._api.aclose()

    # -- naming ---------------------------------------------------------------------------

    def _path(self, container: str, name: str | None = None) -> tuple[str, str | None]:
        """(Swift container, Swift object name) for a logical container/object."""
        validate_name("container", container)
        if name is not None:
            validate_name("object", name)
        if self.options.container is None:
            return container, name
        return self.options.container, f"{container}/{name}" if name is not None else None

    # -- ObjectStore ----------------------------------------------------------------------

    async def create_container(self, container: str) -> None:
        swift_container, _ = self._path(container)
        await self._api.request("PUT", "create container", swift_container, ok=(201, 202, 204))

    async def delete_container(self, container: str) -> None:
        swift_container, _ = self._path(container)
        if self.options.container is not None:
            # Shared container: the backup's "container" is its prefix; it is gone once empty.
            left = await self._list_names(swift_container, f"{container}/")
            if left is None:
                raise ObjectNotFoundError(f"swift container {swift_container!r} does not exist")
            if left:
                raise PermanentObjectStoreError(f"swift: cannot delete {swift_container}/{container}/: {len(left)} object(s) left")
            return
        resp = await self._api.request("DELETE", "delete container", swift_container, ok=(204,))
        if resp.status_code == 404:
            raise ObjectNotFoundError(f"swift container {swift_container!r} does not exist")

    async def put_object(self, container: str, name: str, data: bytes, *,
                         digests: ObjectDigests | None = None) -> None:
        """``digests``: the MD5 of ``data`` when the caller computed it (the chunked driver
        does, in the worker that packs the chunk); else hashed here."""
        swift_container, obj = self._path(container, name)
        md5 = digests.md5 if digests is not None and digests.md5 else await anyio.to_thread.run_sync(_md5, data)
        headers = {"ETag": md5, "Content-Type": "application/octet-stream"}
        resp = await self._api.request("PUT", "store object", swift_container, obj, headers=headers, content=data,
                                   ok=(201,))
        if resp.status_code == 404:
            raise ObjectNotFoundError(f"swift container {swift_container!r} does not exist (writing {name})")
        etag = resp.headers.get("ETag", "").strip('"')
        if etag != md5:
            raise PermanentObjectStoreError(f"swift stored {swift_container}/{obj} with ETag {etag!r}, expected {md5!r}")

    async def get_object(self, container: str, name: str) -> bytes:
        swift_container, obj = self._path(container, name)
        resp = await self._api.request("GET", "read object", swift_container, obj, ok=(200,))
        if resp.status_code == 404:
            raise ObjectNotFoundError(f"object {swift_container}/{obj} is missing from swift")
        data = resp.content
        etag = resp.headers.get("ETag", "").strip('"')
        stored_sha = resp.headers.get("X-Object-Meta-Sha256")  # objects of older backups carry one
        if (etag and etag != await anyio.to_thread.run_sync(_md5, data)) or \
                (stored_sha and stored_sha != await anyio.to_thread.run_sync(_sha256, data)):
            raise CorruptBackupError(f"object {swift_container}/{obj} read from swift does not match its"
                                     " ETag/X-Object-Meta-Sha256")
        return data

    async def delete_object(self, container: str, name: str) -> None:
        """A 404 means someone (or an earlier, retried attempt) already removed it: done."""
        swift_container, obj = self._path(container, name)
        await self._api.request("DELETE", "delete object", swift_container, obj, ok=(204,))

    async def list_objects(self, container: str) -> list[str]:
        swift_container, _ = self._path(container)
        prefix = f"{container}/" if self.options.container is not None else ""
        names = await self._list_names(swift_container, prefix)
        if names is None:
            if self.options.container is not None:
                return []
            raise ObjectNotFoundError(f"swift container {swift_container!r} does not exist")
        return sorted(n[len(prefix):] for n in names)

    async def _list_names(self, swift_container: str, prefix: str) -> list[str] | None:
        """Every object name under ``prefix`` (following Swift's 10 000-name pages); None if
        the container does not exist."""
        names: list[str] = []
        marker = ""
        while True:
            params = {"format": "json", "prefix": prefix, "marker": marker}
            resp = await self._api.request("GET", "list container", swift_container, params=params, ok=(200, 204))
            if resp.status_code == 404:
                return None
            if resp.status_code == 204 or not resp.content:
                return names
            try:
                page = [str(item["name"]) for item in resp.json()]
            except (ValueError, KeyError, TypeError):
                raise PermanentObjectStoreError(f"swift answered an unreadable listing for {swift_container!r}") from None
            if not page:
                return names
            names.extend(page)
            marker = page[-1]

    async def sync_container(self, container: str) -> None:
        """Nothing to do: Swift answers 201 only once the object is durably written."""

