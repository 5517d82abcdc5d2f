"""Hiding secrets from text: the one routine every repr, log line, error and dead letter goes through.

A peer may echo a credential back in any form it was sent in (an error page quoting the
request headers shows ``Authorization: Basic <base64 of user:pass>``, a URL shows it
percent-encoded), so a :class:`Redactor` knows each secret in every encoding notifykit
sends it and replaces all of them with ``***``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "Redactor"]

#: What a hidden secret is replaced with.
REDACTED = "***"
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
