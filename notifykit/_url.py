"""Parsing transport URLs without ever letting a secret into an error message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import ConfigError
from ._redact import redact_url

__all__ = ["ParsedURL", "parse_url", "redact_url"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int | None

    def netloc(self, default_port: int | None = None) -> str:
        """``host:port`` as a URL or a client library writes it (an IPv6 address in brackets);
        the port given, else ``default_port``, else none."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = self.port or default_port
        return f"{host}:{port}" if port else host


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """A transport URL split into the parts transports need.

    ``hosts`` allows ``kafka://a:9092,b:9092``; ``query`` keeps every value of
    repeated keys in order. ``redacted`` is the only form fit for logs.
    """

    scheme: str
    username: str | None
    password: str | None
    hosts: tuple[HostPort, ...]
    path: str
    query: tuple[tuple[str, str], ...]
    redacted: str

    @property
    def host(self) -> str | None:
        return self.hosts[0].host if self.hosts else None

    @property
    def port(self) -> int | None:
        return self.hosts[0].port if self.hosts else None

    def __repr__(self) -> str:
        return f"ParsedURL({self.redacted!r})"


def _parse_host(item: str, redacted: str) -> HostPort:
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise ConfigError(f"malformed URL {redacted!r}: unterminated IPv6 address")
        host, rest = item[1:end], item[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ConfigError(f"malformed URL {redacted!r}: junk after IPv6 address")
    else:
        host, _, port_text = item.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"malformed URL {redacted!r}: port {port_text!r} is not a number in 1-65535")
        port = int(port_text)
    return HostPort(unquote(host), port)


def parse_url(url: str) -> ParsedURL:
    """Split ``scheme://user:pass@host:port,host2:port/path?k=v`` with clear errors."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("transport URL is empty")
    url = url.strip()
    redacted = redact_url(url)
    if "://" not in url:
        raise ConfigError(f"malformed URL {redacted!r}: expected scheme://…, e.g. 'memory://' or 'amqp://host/'")
    scheme = url.split("://", 1)[0].lower()
    if not _SCHEME.match(scheme):
        raise ConfigError(f"malformed URL {redacted!r}: invalid scheme {scheme!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"malformed URL {redacted!r}: {exc}") from None
    if parts.fragment:
        raise ConfigError(f"malformed URL {redacted!r}: fragments ('#…') are not allowed")
    username = password = None
    hostinfo = parts.netloc
    if "@" in hostinfo:
        userinfo, _, hostinfo = hostinfo.rpartition("@")
        user, sep, pw = userinfo.partition(":")
        username = unquote(user)
        password = unquote(pw) if sep else None
    hosts = tuple(_parse_host(item, redacted) for item in hostinfo.split(",") if item)
    if hostinfo and "," in hostinfo and any(not item for item in hostinfo.split(",")):
        raise ConfigError(f"malformed URL {redacted!r}: empty host in host list")
    try:
        query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise ConfigError(f"malformed URL {redacted!r}: query string is not key=value pairs") from None
    return ParsedURL(
        scheme=scheme,
        username=username,
        password=password,
        hosts=hosts,
        path=unquote(parts.path),
        query=query,
        redacted=redacted,
    )
