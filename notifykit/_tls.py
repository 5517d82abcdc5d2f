"""One TLS option set for every transport: ``ca_file``, ``cert_file``, ``key_file``, ``key_password``, ``verify``.

Built by the core (``settings.take_tls()``) so AMQP, Kafka, webhook and any plugin take
the same names and give the same errors; the context itself is loaded by
:meth:`TlsOptions.load_context`, which reads files and so runs in a worker thread
(:meth:`TlsOptions.client_context` does that for a transport's ``open()``).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Protocol

import anyio.to_thread

from ._errors import ConfigError, PermanentError

__all__ = ["TLS_OPTIONS", "TlsOptions", "TlsSettings"]

#: The option names, in the order the docs list them.
TLS_OPTIONS = ("ca_file", "cert_file", "key_file", "key_password", "verify")


class TlsSettings(Protocol):
    """What the TLS options are taken from (``TransportSettings`` is one, and hands itself over in ``take_tls``)."""

    def where(self, key: str | None = None) -> str: ...
    def take_str(self, key: str, default: str | None = None) -> str | None: ...
    def take_secret(self, key: str, default: str | None = None) -> str | None: ...
    def take_bool(self, key: str, default: bool) -> bool: ...


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS settings of one transport; ``enabled`` is whether its URL scheme is a TLS one (https, amqps, …)."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify: bool = True

    @classmethod
    def from_settings(cls, settings: TlsSettings, *, enabled: bool) -> TlsOptions:
        """Take the TLS options; a missing file, a key without its certificate or TLS options on a
        plain-text URL is a ConfigError naming the option, the same for every transport."""
        where = settings.where()
        ca_file = settings.take_str("ca_file")
        cert_file = settings.take_str("cert_file")
        key_file = settings.take_str("key_file")
        key_password = settings.take_secret("key_password")  # never in an error, and repr=False above
        verify = settings.take_bool("verify", True)
        given = [name for name, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file),
                                          ("key_password", key_password)) if value]
        if not enabled:
            if given or not verify:
                names = ", ".join([*given, *([] if verify else ["verify"])])
                raise ConfigError(f"option(s) {names} of {where} need a TLS URL (https://, amqps://, kafka+ssl://, …)")
            return cls()
        for name, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{settings.where(name)}: no such file {path!r}")
        if key_file and not cert_file:
            raise ConfigError(f"{settings.where('key_file')} needs 'cert_file' (the certificate of that key)")
        if key_password and not key_file and not cert_file:
            raise ConfigError(f"{settings.where('key_password')} needs 'cert_file' (and 'key_file' if separate)")
        return cls(True, ca_file, cert_file, key_file, key_password, verify)

    def load_context(self, *, default_ca_file: str | None = None, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """The client SSLContext (reads the CA bundle and key files: call it in a worker thread).

        Raises ``ssl.SSLError`` / ``OSError`` for files that do not load; transports report
        that as a PermanentError (it will not load on retry either).
        """
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or default_ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    async def client_context(self, where: str) -> ssl.SSLContext | None:
        """The client SSLContext of a TLS URL (None for a plain one), loaded in a worker thread.

        Files that do not load are a PermanentError naming ``where`` (they will not load on
        retry either); ``ssl.SSLError`` is an OSError, a wrong ``key_password`` one too.
        """
        if not self.enabled:
            return None
        try:
            return await anyio.to_thread.run_sync(self.load_context)
        except (OSError, ValueError) as exc:
            raise PermanentError(f"{where}: cannot load TLS files: {exc}") from None
