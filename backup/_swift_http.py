"""The Swift store's HTTP side: one httpx client, the auth token, and one API call.

Kept apart from ``_swift.py`` (which maps the ObjectStore protocol onto containers and
objects) so the store reads like the S3 and RADOS ones: what a token is, how it is renewed
and how a status becomes an ObjectStoreError live here. The token comes from TempAuth
(``GET /auth/v1.0`` with ``X-Auth-User``/``X-Auth-Key``) or Keystone (``_keystone.py``),
on first use; a 401 renews it once, shared by every call that saw the old one fail.
Credentials never appear in reprs, logs or error messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from urllib.parse import quote

import anyio
import httpx

from ._errors import (
    ObjectStoreError,
    ObjectStoreFullError,
    PermanentObjectStoreError,
    TransientObjectStoreError,
)
from ._keystone import KeystoneCredentials, KeystoneSession
from ._retry import StoreRetry

__all__ = ["SwiftAuth", "SwiftClient", "SwiftSession"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SwiftSession:
    """A storage URL and the token that opens it. The token is a secret: not in the repr."""

    storage_url: str
    token: str = field(repr=False)


class SwiftAuth(Protocol):
    """What the client reads of the store's options (``_swift.SwiftOptions``), so this module
    does not import the store. ``key`` is a secret."""

    @property
    def auth_url(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def keystone(self) -> KeystoneCredentials | None: ...
    @property
    def retry(self) -> StoreRetry: ...
    @property
    def timeout(self) -> float: ...


class SwiftClient:
    """Authenticated calls to one Swift account. Call ``aclose()`` when done (closes connections)."""

    def __init__(self, options: SwiftAuth, *, max_connections: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        self._max_connections = max_connections
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.session: SwiftSession | None = None
        self._auth_lock: anyio.Lock | None = None
        self.keystone = KeystoneSession(options.keystone, options.timeout) if options.keystone else None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._max_connections,
                                  max_keepalive_connections=self._max_connections)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.options.timeout), limits=limits,
                                             trust_env=False, follow_redirects=False, transport=self._transport)
        return self._client

    @staticmethod
    def _url(storage_url: str, container: str, obj: str | None = None) -> str:
        url = f"{storage_url.rstrip('/')}/{quote(container, safe='')}"
        return f"{url}/{quote(obj, safe='/')}" if obj is not None else url

    # -- the token ------------------------------------------------------------------------

    async def authenticate(self, stale: SwiftSession | None) -> SwiftSession:
        """A valid session; re-authenticates once for all callers that saw ``stale`` fail."""
        if self._auth_lock is None:
            self._auth_lock = anyio.Lock()
        async with self._auth_lock:
            if self.session is not None and self.session is not stale:
                return self.session
            session = await self._with_retries("authenticate", f"at {self.options.auth_url}", self._auth_once)
            self.session = session
            return session

    async def _auth_once(self) -> SwiftSession:
        opts = self.options
        if self.keystone is not None:
            token, url = await self.keystone.authenticate(renew=self.session is not None)
            return SwiftSession(url, token)
        resp = await self._http().get(opts.auth_url, headers={"X-Auth-User": opts.user, "X-Auth-Key": opts.key})
        self._check_auth(resp)
        url, token = resp.headers.get("X-Storage-Url"), resp.headers.get("X-Auth-Token")
        if not url or not token:
            raise PermanentObjectStoreError(f"swift auth at {opts.auth_url} answered without X-Storage-Url/X-Auth-Token")
        return SwiftSession(url, token)

    def _check_auth(self, resp: httpx.Response) -> None:
        if resp.status_code >= 500:
            raise TransientObjectStoreError(f"{resp.status_code} {resp.reason_phrase}")
        if resp.status_code in (401, 403):
            raise PermanentObjectStoreError(f"swift authentication at {self.options.auth_url} failed for user "
                                   f"{self.options.user!r}: {resp.status_code} {resp.reason_phrase} (check the key)")
        if resp.status_code >= 300:
            raise PermanentObjectStoreError(f"swift authentication at {self.options.auth_url} failed:"
                                   f" {resp.status_code} {resp.reason_phrase}")

    # -- one call -------------------------------------------------------------------------

    async def _with_retries(self, action: str, what: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``attempt()`` under the store's retry policy; the last failure becomes an ObjectStoreError."""
        return await self.options.retry.call("swift", action, what, attempt, classify=_classify)

    async def request(self, method: str, action: str, container: str, obj: str | None = None, *,
                      headers: Mapping[str, str] | None = None, content: bytes | None = None,
                      params: Mapping[str, str] | None = None,
                      ok: tuple[int, ...] = (200, 201, 202, 204)) -> httpx.Response:
        """One Swift API call with auth (re-auth once on 401), retries and error mapping.

        Returns the response for a status in ``ok`` or 404 (the caller decides what a
        missing thing means); raises ObjectStoreError for everything else.
        """
        what = f"{container}/{obj}" if obj is not None else repr(container)
        reauthenticated = False

        async def once() -> httpx.Response:
            nonlocal reauthenticated
            session = self.session or await self.authenticate(None)
            while True:
                hdrs = {"X-Auth-Token": session.token, **(headers or {})}
                resp = await self._http().request(method, self._url(session.storage_url, container, obj),
                                                  headers=hdrs, content=content, params=params)
                if resp.status_code == 401 and not reauthenticated:
                    reauthenticated = True  # token expired or revoked: one fresh token, then give up
                    session = await self.authenticate(session)
                    continue
                break
            status = resp.status_code
            if status in ok or status == 404:
                return resp
            if status == 401:
                raise PermanentObjectStoreError(f"swift refused the token for {method} {what} (401) right after authenticating")
            if status == 507:
                raise ObjectStoreFullError(f"swift object store full: 507 Insufficient Storage on {method} {what}")
            if status == 413:
                raise ObjectStoreFullError(f"swift refused {method} {what}: 413 Request Entity Too Large (the object"
                                       f" exceeds the cluster's max_file_size or a quota is exhausted): {_body(resp)}")
            if status == 422:
                raise TransientObjectStoreError("422 Unprocessable Entity: the body did not match its ETag (damaged in transit)")
            if status >= 500:
                raise TransientObjectStoreError(f"{status} {resp.reason_phrase}")
            if status == 403:
                raise PermanentObjectStoreError(f"swift refused {method} {what} for {self.options.user}: 403 Forbidden"
                                                " (no Swift operator role in this project, or an ACL denies it)")
            raise PermanentObjectStoreError(f"swift refused {method} {what}: {status} {resp.reason_phrase}: {_body(resp)}")

        return await self._with_retries(action, what, once)


def _classify(exc: Exception, where: str) -> ObjectStoreError | None:
    """httpx's failures: a lost connection or a timeout may pass, a bad URL or body will not."""
    if isinstance(exc, httpx.InvalidURL):
        return PermanentObjectStoreError(f"{where}: invalid URL ({exc})")
    if isinstance(exc, httpx.TransportError):
        return TransientObjectStoreError(_describe(exc))
    if isinstance(exc, httpx.HTTPError):  # a body that cannot be decoded, a redirect: trying again will not help
        return PermanentObjectStoreError(f"{where}: {_describe(exc)}")
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc)


def _body(resp: httpx.Response) -> str:
    """The start of an error body, one line (Swift explains 4xx answers in plain text)."""
    text = " ".join(resp.text.split())[:200]
    return text or "(no body)"
