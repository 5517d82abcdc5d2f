"""Webhook signatures: the sender signs each request body, the receiver checks origin and freshness.

The scheme is Stripe's: the header ``Notifykit-Signature: t=<unix seconds>,v1=<hex>``
carries ``HMAC-SHA256(secret, "<t>." + body)``. Signing the timestamp with the body lets
a receiver refuse replays of an old request (``tolerance``). During a key rotation the
sender signs with every configured secret (several ``v1=`` entries) and the receiver
accepts any of its secrets, so neither side has to switch at the same instant.

CloudEvents binary mode carries the event's attributes (id, type, source, …) in
``ce-*`` headers rather than in the body, so those headers are signed too: the signed
string is ``"<t>."``, then one ``"<name>:<value>\n"`` line per ``ce-*`` header (lower-case
name, value as sent, sorted by name), then the body. Without ``ce-*`` headers this is
exactly Stripe's ``"<t>." + body``.

Pure hmac/hashlib: receivers can use :func:`verify` without installing any transport.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from ._errors import ConfigError, SignatureError

__all__ = ["DEFAULT_TOLERANCE", "SIGNATURE_HEADER", "SignatureError", "sign", "verify"]

#: Name of the header carrying the signature.
SIGNATURE_HEADER = "Notifykit-Signature"
#: Seconds a signed timestamp may differ from the receiver's clock (either way).
DEFAULT_TOLERANCE = 300.0
_SCHEME = "v1"

Secret = str | bytes
Secrets = Secret | Sequence[Secret]


def _secret_list(secret: Secrets) -> list[bytes]:
    items = [secret] if isinstance(secret, str | bytes) else list(secret)
    keys = [s.encode() if isinstance(s, str) else bytes(s) for s in items]
    if not keys or any(not key for key in keys):
        raise ConfigError("webhook secret must be a non-empty string (or a list of them)")
    return keys


def _signed_prefix(timestamp: int, headers: Mapping[str, str] | None) -> bytes:
    """``"<t>."`` then the ``ce-*`` headers, one canonical line each (binary-mode attributes)."""
    lines = sorted(f"{k.lower()}:{v.strip()}\n" for k, v in (headers or {}).items() if k.lower().startswith("ce-"))
    return f"{timestamp}.{''.join(lines)}".encode()


def _digest(key: bytes, prefix: bytes, body: bytes) -> str:
    mac = hmac.new(key, prefix, hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(
    body: bytes | str, secret: Secrets, timestamp: int | None = None, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers to add to a request carrying ``body``: ``{"Notifykit-Signature": "t=…,v1=…"}``.

    ``secret`` may be a list during a key rotation: one ``v1`` per secret.
    ``timestamp`` defaults to now (Unix seconds). ``headers`` are the request's other
    headers: its ``ce-*`` ones (CloudEvents binary mode) are signed with the body.
    """
    data = body.encode() if isinstance(body, str) else body
    t = int(time.time()) if timestamp is None else int(timestamp)
    prefix = _signed_prefix(t, headers)
    signatures = ",".join(f"{_SCHEME}={_digest(key, prefix, data)}" for key in _secret_list(secret))
    return {SIGNATURE_HEADER: f"t={t},{signatures}"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _parse(value: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, text = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not text.isdigit():
                raise SignatureError(f"{SIGNATURE_HEADER} header has a malformed timestamp")
            timestamp = int(text)
        elif key == _SCHEME:
            signatures.append(text.strip().lower())
    if timestamp is None:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no timestamp (t=…)")
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no {_SCHEME} signature")
    return timestamp, signatures


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: Secrets,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a received request; return its signed timestamp or raise :class:`SignatureError`.

    ``headers`` is any mapping of the request's headers (names are matched without
    regard to case; its ``ce-*`` headers are covered by the signature), ``body`` the raw
    bytes as received — not re-serialised JSON.
    ``secret`` may be a list (accept any during a rotation). A timestamp further than
    ``tolerance`` seconds from ``now`` (default: the current time) is refused, so a
    captured request cannot be replayed later.
    """
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0 seconds, got {tolerance}")
    keys = _secret_list(secret)
    value = _header(headers, SIGNATURE_HEADER)
    if not value:
        raise SignatureError(f"request has no {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(value)
    current = time.time() if now is None else now
    age = current - timestamp
    if abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise SignatureError(f"signature timestamp is {abs(age):.0f}s {when}, outside the tolerance of {tolerance:g}s")
    data = body.encode() if isinstance(body, str) else body
    prefix = _signed_prefix(timestamp, headers)
    expected = [_digest(key, prefix, data) for key in keys]
    # Compare every pair in constant time; no early exit that would leak which one matched.
    matched = False
    for candidate in signatures:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    if not matched:
        raise SignatureError("signature does not match the body (tampered, or signed with another secret)")
    return timestamp
