"""Hiding secrets from text: the one routine every repr, log line, error and dead letter goes through.

Three tools, used by every repr, log line, error, dead letter and CLI message of notifykit,
its transports and the backup service:

- :func:`redact_url` for a URL we hold (its password and secret-looking query values);
- :func:`redact_text` for free text that may quote URLs (a library's error message);
- :class:`Redactor` for the secrets of one component, in every form they are sent: a peer
  may echo a credential back (an error page quoting the request headers shows
  ``Authorization: Basic <base64 of user:pass>``, a URL shows it percent-encoded).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "Redactor", "redact_text", "redact_url"]

#: What a hidden secret is replaced with.
REDACTED = "***"
_REDACTED = REDACTED
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
# "header": extra HTTP headers (header=Authorization:Bearer …) usually carry credentials.
_SECRET_QUERY_KEYS = re.compile(r"(pass|secret|token|key|auth|credential|header|signature)", re.IGNORECASE)
# In free text: user:password@ of any URL, and a secret-looking key=value of any query string.
_USERINFO_IN_TEXT = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@?#]*):[^\s@/]*@")
_SECRET_PARAM_IN_TEXT = re.compile(
    r"(?P<key>[?&;](?:[^\s=&#]*?)(?:pass|secret|token|key|auth|credential|header|signature)[^\s=&#]*=)[^\s&#'\"]+",
    re.IGNORECASE)
#: Shorter values are not hidden: replacing every "ab" in a message would hide the message, not a secret.
MIN_SECRET_CHARS = 4


def _b64(data: str) -> set[str]:
    raw = data.encode()
    return {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}


class Redactor:
    """The secrets of one component (a transport, a config), and :meth:`redact` to hide them in text."""

    __slots__ = ("_needles",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._needles: list[str] = []
        for secret in secrets:
            self.add(secret)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def _remember(self, forms: Iterable[str]) -> None:
        for form in forms:
            if len(form) >= MIN_SECRET_CHARS and form not in self._needles:
                self._needles.append(form)
        # Longest first: a secret that contains another one is hidden whole.
        self._needles.sort(key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        """Hide ``secret`` as is, percent-encoded, JSON-escaped and base64-encoded."""
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        escaped = json.dumps(secret)[1:-1]
        self._remember({secret, quote(secret, safe=""), quote_plus(secret, safe=""), escaped, *_b64(secret)})

    def add_basic(self, username: str, password: str | None) -> None:
        """Hide HTTP Basic credentials: the password, and the ``base64(user:password)`` token sent."""
        self.add(password)
        token = f"{username}:{password or ''}"
        self._remember({token if password else "", *_b64(token)})

    def add_header(self, value: str) -> None:
        """Hide a header value, and its credential alone (``Bearer TOKEN`` → ``TOKEN`` too)."""
        self.add(value)
        scheme, sep, credential = value.strip().partition(" ")
        if sep and credential.strip():
            self.add(credential.strip())
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credential.strip(), validate=True).decode()
                except ValueError:
                    return
                user, _, password = decoded.partition(":")
                self.add_basic(user, password)

    def redact(self, text: str) -> str:
        """``text`` with every known secret, in every known form, replaced by ``***``."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    __call__ = redact

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._needles)} secret form(s)>"


def redact_url(url: str) -> str:
    """The URL with its password and secret-looking query values replaced by ``***``.

    Never raises: a URL too broken to parse is reduced to its scheme.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        head = url.split(":", 1)[0]
        return f"{head}://{_REDACTED}" if _SCHEME.match(head) else _REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_REDACTED}@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
    query = parts.query
    if query:
        pairs = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            shown = _REDACTED if _SECRET_QUERY_KEYS.search(key) and value else value
            pairs.append(f"{quote(key, safe='_-.')}={quote(shown, safe='*/_-.,:')}")
        query = "&".join(pairs)
    redacted = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not netloc and url.startswith(f"{parts.scheme}://") and not redacted.startswith(f"{parts.scheme}://"):
        redacted = f"{parts.scheme}://{redacted[len(parts.scheme) + 1:]}"  # urlunsplit drops an empty "//"
    return redacted


def redact_text(text: str) -> str:
    """Free text with the password of every URL in it and secret-looking query values replaced by ``***``."""
    text = _USERINFO_IN_TEXT.sub(rf"\g<head>:{REDACTED}@", text)
    return _SECRET_PARAM_IN_TEXT.sub(rf"\g<key>{REDACTED}", text)
