"""The webhook transport's POST exchange with a receiver that may be hostile.

The receiver chooses the status, the ``Location`` of a redirect, ``Retry-After`` and the
body, so each is read defensively: redirects are followed only as 307/308 (a POST never
becomes a body-less GET), only to the same origin or one listed in ``redirect_origin``
(the signed body and credentials stay at home), never in a loop and at most
``MAX_REDIRECTS`` times; at most ``MAX_RESPONSE_BYTES`` of a body are read, and whatever
of it or of a URL reaches an error is scrubbed of our own secrets first.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC
from urllib.parse import urljoin, urlsplit

import httpx

from notifykit.transport import PermanentError, redact_url

__all__ = ["MAX_QUOTED_CHARS", "MAX_REDIRECTS", "MAX_RESPONSE_BYTES", "WebhookExchange", "origin",
           "parse_retry_after"]

#: Most bytes of a response body read (to quote in an error, or to drain for keep-alive).
MAX_RESPONSE_BYTES = 4096
#: Most characters of a response body quoted in an error message.
MAX_QUOTED_CHARS = 512
#: Most redirects followed for one request (307/308, same or listed origin) before giving up.
MAX_REDIRECTS = 5

_REDIRECTS_KEEPING_METHOD = frozenset({307, 308})
_REDIRECTS_TO_GET = frozenset({301, 302, 303})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); None if absent or junk."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def origin(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit: what "same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class WebhookExchange:
    """POSTs to one endpoint, following only the redirects that keep the POST whole and its secrets at home."""

    def __init__(self, target: str, display: str, follow_redirects: bool, redirect_origins: frozenset[str],
                 scrub: Callable[[str], str]) -> None:
        self.target = target
        self.display = display
        self.follow_redirects = follow_redirects
        self.redirect_origins = redirect_origins
        self._scrub = scrub

    async def post(self, client: httpx.AsyncClient, body: bytes,
                   headers: dict[str, str]) -> tuple[int, str, float | None, str]:
        """The final (status, quoted body, Retry-After, URL); the caller's deadline bounds the time.

        Raises PermanentError for a redirect that would turn the POST into a body-less GET
        (301/302/303), go to another origin not listed in ``redirect_origin``, loop, or
        exceed MAX_REDIRECTS.
        """
        url, seen = self.target, {self.target}
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                text = await self._read_capped(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location")
            if not 300 <= status < 400 or status == 304:
                return status, text, retry_after, url
            url = self._redirect_target(url, status, location)
            if url in seen:
                raise PermanentError(f"POST {self.display}: HTTP {status} redirect loop back to {self.shown(url)}")
            seen.add(url)
        raise PermanentError(f"POST {self.display}: more than {MAX_REDIRECTS} redirects, last to {self.shown(url)}")

    def _redirect_target(self, url: str, status: int, location: str | None) -> str:
        """The URL a 3xx answer points to, if following it is safe; else the permanent reason why not."""
        if not location:
            raise PermanentError(f"POST {self.display}: HTTP {status} redirect without a Location")
        target = urljoin(url, location.strip())
        shown = self.shown(target)
        if not self.follow_redirects:
            raise PermanentError(
                f"POST {self.display}: HTTP {status} redirect not followed (follow_redirects=false), Location: {shown}")
        if status in _REDIRECTS_TO_GET:
            raise PermanentError(f"POST {self.display}: HTTP {status} redirect to {shown} not followed: a {status} "
                                 "turns the POST into a GET without the notification; point the URL there instead")
        if status not in _REDIRECTS_KEEPING_METHOD:
            raise PermanentError(f"POST {self.display}: HTTP {status} (not a redirect that keeps the POST), "
                                 f"Location: {shown}")
        where = origin(target)
        if where != origin(self.target) and where not in self.redirect_origins:
            raise PermanentError(
                f"POST {self.display}: HTTP {status} redirect to another origin {where} not followed: "
                "the signed body and credentials stay with their origin unless redirect_origin lists it")
        return target

    def shown(self, url: str) -> str:
        """A peer-given URL fit for an error: no password, no secret-looking query, no echo of our secrets."""
        return self._scrub(redact_url(url))

    async def _read_capped(self, response: httpx.Response) -> str:
        """Up to MAX_RESPONSE_BYTES of the body (drained so the connection can be reused), for errors.

        The caller's deadline bounds the time; a bigger body is cut (its connection closed).
        """
        data = b""
        try:
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) >= MAX_RESPONSE_BYTES:
                    break
        except httpx.HTTPError:
            pass  # the status already tells the outcome; a broken body only loses the quote
        if 200 <= response.status_code < 300 or not data:
            return ""
        text = " ".join(data[:MAX_RESPONSE_BYTES].decode("utf-8", "replace").split())
        if len(text) > MAX_QUOTED_CHARS:
            text = text[:MAX_QUOTED_CHARS] + "…"
        return self._scrub(text)
