"""``http://`` / ``https://`` — POST each notification (or a batch) to a webhook endpoint.

CloudEvents 1.0 over HTTP by default (structured mode; ``mode=binary`` puts the
attributes in ``ce-*`` headers), or ``oslo`` / ``json`` bodies. With ``secret=…`` every
request is signed (``notifykit.signing``), so receivers can check origin and refuse
replays. One pooled ``httpx.AsyncClient`` per transport, at most ``max_concurrency``
requests in flight. The transport only classifies outcomes — 2xx sent, 408/425/429/5xx
and network errors transient (with ``Retry-After``), other statuses permanent — and
leaves retrying, backoff and dead-lettering to the core.

Safe against a hostile receiver: one deadline (``timeout``) covers connecting, the
headers and the body, and at most ``MAX_RESPONSE_BYTES`` of a body are read; redirects
are followed only as 307/308 (a POST never becomes a GET), only to the same origin or
one listed in ``redirect_origin``, and a loop is a permanent error (that exchange is
the private ``_webhook_exchange`` module). Secrets (``secret``,
header values, URL user:password, in every encoding they are sent in) never reach logs,
reprs, errors or dead letters.
"""

from __future__ import annotations

import importlib.util
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self
from urllib.parse import quote, urlsplit

import anyio
import anyio.to_thread
import httpx

from notifykit import __version__
from notifykit.signing import SIGNATURE_HEADER, sign
from notifykit.transport import (
    AsyncApiRoutes,
    BatchError,
    ConfigError,
    MissingDependencyError,
    Notification,
    PermanentError,
    Priority,
    Redactor,
    Route,
    TlsOptions,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
    cloudevent_attributes,
    parse_url,
    redact_url,
)

from ._webhook_exchange import MAX_QUOTED_CHARS as MAX_QUOTED_CHARS
from ._webhook_exchange import MAX_REDIRECTS as MAX_REDIRECTS
from ._webhook_exchange import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES
from ._webhook_exchange import WebhookExchange, origin, parse_retry_after

__all__ = ["WebhookTransport", "parse_retry_after"]

#: Default events per CloudEvents batch body (batch=true).
BATCH_BODY_EVENTS = 100
#: Default notifications per send() in per-event mode, fanned out max_concurrency at a time.
PER_EVENT_BATCH = 1000
#: Bodies larger than this are signed in a worker thread, so hashing never stalls the loop.
SIGN_INLINE_MAX_BYTES = 64 * 1024

_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding", SIGNATURE_HEADER.lower()}
# CloudEvents HTTP binding 3.1.3.2: printable ASCII except space, '"' and '%' goes as is.
_CE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """The endpoint and every option, validated when the Notifier is built."""

    target: str
    binary: bool = False
    batch: bool = False
    max_batch: int = PER_EVENT_BATCH
    timeout: float = 10.0
    max_concurrency: int = 10
    tls: TlsOptions = field(default_factory=TlsOptions)
    http2: bool = False
    follow_redirects: bool = False
    redirect_origins: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        target = _target(settings)
        fmt = settings.format
        binary = settings.take_choice("mode", ("structured", "binary"), "structured") == "binary"
        batch = settings.take_bool("batch", False)
        # Per-event mode: a large batch keeps max_concurrency requests in flight longer
        # (the dispatcher hands over one batch at a time, so each batch ends with a tail).
        default_batch = BATCH_BODY_EVENTS if batch else PER_EVENT_BATCH
        max_batch = settings.take_int("max_batch", default_batch, minimum=1)
        timeout = settings.take_float("timeout", 10.0, minimum=0.001)
        max_concurrency = settings.take_int("max_concurrency", 10, minimum=1)
        tls = settings.take_tls(enabled=settings.url.scheme == "https")
        http2 = settings.take_bool("http2", False)
        follow_redirects = settings.take_bool("follow_redirects", False)
        origins = frozenset(_parse_origin(settings, item) for item in settings.take_list("redirect_origin"))
        # Unsplit (a header value or a key may hold commas), and never shown in an error.
        headers = _parse_headers(settings, settings.take_secrets("header"))
        secrets = tuple(settings.take_secrets("secret"))
        if any(not s for s in secrets):
            raise ConfigError(f"{settings.where('secret')} must not be empty")
        if origins and not follow_redirects:
            raise ConfigError(f"{settings.where('redirect_origin')} needs follow_redirects=true")
        if binary and fmt is not WireFormat.CLOUDEVENTS:
            raise ConfigError(f"{settings.where('mode')}: mode=binary needs format=cloudevents, not {fmt.value}")
        if binary and batch:
            raise ConfigError(f"{settings.where('batch')}: CloudEvents binary mode carries one event per request; "
                              "use mode=structured")
        if settings.url.username is not None and any(name.lower() == "authorization" for name in headers):
            raise ConfigError(f"{settings.where('header')}: Authorization is set both by the URL's user:password "
                              "and by a header")
        if http2 and importlib.util.find_spec("h2") is None:
            raise MissingDependencyError(f"{settings.where('http2')}: HTTP/2 needs the 'h2' package; install it "
                                         "with: pip install 'notifykit[webhook]'")
        return cls(target, binary, batch, max_batch, timeout, max_concurrency, tls, http2, follow_redirects, origins,
                   headers, secrets, settings.url.username, settings.url.password)


def _target(settings: TransportSettings) -> str:
    """The request URL: no userinfo, no query (the query holds options), so nothing secret."""
    url = settings.url
    if url.scheme not in ("http", "https"):
        raise ConfigError(f"webhook URL {url.redacted!r}: scheme must be http or https")
    if len(url.hosts) != 1 or not url.host:
        raise ConfigError(f"webhook URL {url.redacted!r}: expected exactly one host, e.g. https://hooks.example/notify")
    path = quote(url.path or "/", safe="/:@!$&'()*+,;=-._~")
    return f"{url.scheme}://{url.hosts[0].netloc()}{path}"


def _parse_origin(settings: TransportSettings, text: str) -> str:
    """``scheme://host[:port]`` of a ``redirect_origin`` value, normalised as :func:`origin` makes it."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username is not None:
        raise ConfigError(f"{settings.where('redirect_origin')} must be an origin like https://host:8443, got "
                          f"{redact_url(text)!r}")
    return origin(text.strip())


def _parse_headers(settings: TransportSettings, values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    where = settings.where("header")
    for item in values:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.match(name):
            raise ConfigError(f"{where} must be Name:Value with a valid header name")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("ce-"):
            raise ConfigError(f"{where}: header {name!r} is set by the transport")
        if any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{where}: the value of header {name!r} contains a line break")
        headers[name] = value
    return headers


class WebhookTransport(Transport):
    """POSTs notifications to one HTTP(S) endpoint; a 2xx answer means delivered."""

    default_format: ClassVar[WireFormat] = WireFormat.CLOUDEVENTS
    max_batch_size = PER_EVENT_BATCH
    Options = WebhookOptions
    options: WebhookOptions
    messaging_system: ClassVar[str | None] = "http"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"http": "http", "https": "https"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """One channel, the target's path, POSTed to; the path is the server's ``pathname`` too."""
        path = self.settings.url.path
        return AsyncApiRoutes((Route(parse_url(self.options.target).path or "/", tuple(e for e, _ in events)),),
                              {"http": {"method": "POST", "bindingVersion": "0.3.0"}},
                              path if path not in ("", "/") else None)

    def __init__(self, settings: TransportSettings, options: WebhookOptions) -> None:
        super().__init__(settings, options)
        self.target = self.display = options.target  # no userinfo, no query: nothing secret
        self.max_batch_size = options.max_batch
        self.timeout = options.timeout
        self.headers = options.headers
        self._secrets = list(options.secrets)
        self._redactor = Redactor([*options.secrets, options.password])
        for value in options.headers.values():
            self._redactor.add_header(value)
        self._auth: httpx.BasicAuth | None = None
        if options.username is not None:
            self._auth = httpx.BasicAuth(options.username, options.password or "")
            self._redactor.add_basic(options.username, options.password)
        self._client: httpx.AsyncClient | None = None
        self._exchange = WebhookExchange(self.target, self.display, options.follow_redirects,
                                         options.redirect_origins, self._scrub)

    # -- connection --------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        """Built in a worker thread: loading CA bundles and key files reads the disk."""
        import certifi

        alpn = ("h2", "http/1.1") if self.options.http2 else ()
        return self.options.tls.load_context(default_ca_file=certifi.where(), alpn=alpn)

    def _make_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.options.max_concurrency,
                              max_keepalive_connections=self.options.max_concurrency)
        return httpx.AsyncClient(
            headers={"User-Agent": f"notifykit/{__version__}", **self.headers},
            auth=self._auth,
            timeout=httpx.Timeout(self.timeout),
            limits=limits,
            verify=self._ssl_context(),
            http2=self.options.http2,
            follow_redirects=False,  # followed by WebhookExchange, which refuses what would leak or lose a POST
            trust_env=False,
        )

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = await anyio.to_thread.run_sync(self._make_client)
        except (OSError, ssl.SSLError) as exc:
            raise self.classify(exc) from None

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """httpx and TLS errors: a CA file or client certificate that will not load is permanent (it
        will not load on retry either); timeouts and network errors are transient, named as httpx names them."""
        if isinstance(exc, TimeoutError | httpx.TimeoutException):  # TimeoutError is an OSError: first
            return TransientError(f"POST {self.display}: no response within timeout={self.timeout:g}s")
        if isinstance(exc, OSError | ssl.SSLError) and not isinstance(exc, httpx.HTTPError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return PermanentError(f"cannot set up TLS for {self.display}: {type(exc).__name__}: {reason}")
        return TransientError(f"POST {self.display}: {type(exc).__name__}: {self._scrub(str(exc))}")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- sending -----------------------------------------------------------------------

    async def send(self, batch: Sequence[Notification]) -> None:
        if self._client is None:
            await self.open()
        if self.options.batch:
            await self._post(*self._batch_request(batch))
            return
        if len(batch) == 1:
            await self._post(*self._request(batch[0]))
            return
        failures = await self._post_each(batch)
        if not failures:
            return
        errors = list(failures.values())
        if len(failures) == len(batch) and all(isinstance(e, TransientError) for e in errors):
            waits = [e.retry_after for e in errors if isinstance(e, TransientError) and e.retry_after is not None]
            raise TransientError(
                f"all {len(batch)} requests failed, first: {errors[0]}", retry_after=max(waits) if waits else None
            )
        raise BatchError(failures)

    async def _post_each(self, batch: Sequence[Notification]) -> dict[int, TransientError | PermanentError]:
        """One request per notification, at most ``max_concurrency`` at a time.

        After the first transient failure (peer down, overloaded, rate limiting) no new
        request is started: the rest of the batch fails at once and the core's backoff
        applies to it, instead of every request waiting out its own timeout.
        """
        failures: dict[int, TransientError | PermanentError] = {}
        indexes: Iterator[int] = iter(range(len(batch)))
        halted: list[TransientError] = []

        async def worker() -> None:
            for index in indexes:  # shared iterator: each worker takes the next index
                if halted:
                    failures[index] = TransientError(f"not sent after: {halted[0]}", retry_after=halted[0].retry_after)
                    continue
                try:
                    await self._post(*self._request(batch[index]))
                except TransientError as exc:
                    failures[index] = exc
                    halted.append(exc)
                except PermanentError as exc:
                    failures[index] = exc

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.options.max_concurrency, len(batch))):
                tg.start_soon(worker)
        return failures

    def _request(self, n: Notification) -> tuple[bytes, dict[str, str]]:
        if self.options.binary:
            headers: dict[str, str] = {}
            for key, value in cloudevent_attributes(n).items():
                if key == "datacontenttype":
                    headers["Content-Type"] = value
                else:
                    headers[f"ce-{key}"] = quote(value, safe=_CE_SAFE)
            return n.payload_json.encode(), headers
        return n.encode(self.format), {"Content-Type": self.format.content_type}

    def _batch_request(self, batch: Sequence[Notification]) -> tuple[bytes, dict[str, str]]:
        body = b"[" + b",".join(n.encode(self.format) for n in batch) + b"]"
        content_type = _BATCH_CONTENT_TYPE if self.format is WireFormat.CLOUDEVENTS else "application/json"
        return body, {"Content-Type": content_type}

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        if self._secrets:
            # ce-* headers (binary mode) carry the event's attributes: they are signed with the body.
            if len(body) <= SIGN_INLINE_MAX_BYTES:
                headers.update(sign(body, self._secrets, None, headers))
            else:
                headers.update(await anyio.to_thread.run_sync(sign, body, self._secrets, None, headers))
        client = self._client
        assert client is not None, "send() before open()"
        try:
            # One deadline for the whole exchange: a peer trickling headers or body cannot hold it.
            with anyio.fail_after(self.timeout):
                status, text, retry_after, url = await self._exchange.post(client, body, headers)
        except (TimeoutError, httpx.HTTPError) as exc:  # our deadline, or one read/connect/pool wait of httpx
            raise self.classify(exc) from None
        where = self.display if url == self.target else f"{self.display} (redirected to {self._exchange.shown(url)})"
        if 200 <= status < 300:
            return
        quoted = f": {text}" if text else ""
        if status in _TRANSIENT_STATUSES or status >= 500:
            raise TransientError(f"POST {where}: HTTP {status}{quoted}", retry_after=retry_after)
        raise PermanentError(f"POST {where}: HTTP {status}{quoted}")

    def _scrub(self, text: str) -> str:
        """Hide our own secrets should a peer echo them back (e.g. an error page quoting headers)."""
        return self._redactor.redact(text)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.name!r} POST {self.display}>"
