"""A complete third-party notifykit transport: each notification as an RFC 5424 syslog
message over UDP, ``syslog://HOST:PORT?facility=16&app_name=notifykit``.

It has the shape of every notifykit transport — a frozen options dataclass, ``classify``,
``open`` / ``send`` / ``aclose`` — and imports only ``notifykit.transport``; notifykit finds
it by URL scheme through the ``notifykit.transports`` entry point declared in this
distribution's pyproject.toml. Nothing in notifykit is edited to add it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import anyio

from notifykit.transport import (
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

__all__ = ["SyslogTransport"]

# RFC 5424 severities for notifykit priorities.
_SEVERITY = {
    Priority.CRITICAL: 2,
    Priority.ERROR: 3,
    Priority.WARN: 4,
    Priority.AUDIT: 5,
    Priority.INFO: 6,
    Priority.SAMPLE: 6,
    Priority.DEBUG: 7,
}


@dataclass(frozen=True, slots=True)
class SyslogOptions:
    """Everything the URL says, checked once when the Notifier is built."""

    host: str
    port: int = 514
    facility: int = 16
    app_name: str = "notifykit"

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        """Take the options this transport knows; notifykit then refuses any other (a typo) itself."""
        if not settings.url.host:
            raise ConfigError(f"syslog URL {settings.url.redacted!r} needs a host: syslog://HOST:PORT")
        facility = settings.take_int("facility", 16, minimum=0) or 0
        if facility > 23:
            raise ConfigError(f"syslog facility must be 0-23, got {facility}")
        app_name = settings.take_str("app_name", "notifykit") or "notifykit"
        return cls(settings.url.host, settings.url.port or 514, facility, app_name)


class SyslogTransport(Transport):
    """UDP syslog: a datagram per notification; send() returns once the kernel took them."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 200
    Options = SyslogOptions
    options: SyslogOptions

    def __init__(self, settings: TransportSettings, options: SyslogOptions) -> None:
        super().__init__(settings, options)
        self._socket: anyio.abc.ConnectedUDPSocket | None = None

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """Socket errors (no route, buffer full) may pass: transient, with the OS's reason."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return TransientError(f"syslog to {self.options.host}:{self.options.port}: {reason}")

    async def open(self) -> None:
        try:
            self._socket = await anyio.create_connected_udp_socket(self.options.host, self.options.port,
                                                                   family=socket.AF_INET)
        except OSError as exc:
            raise self.classify(exc) from None

    def _datagram(self, n: Notification) -> bytes:
        pri = self.options.facility * 8 + _SEVERITY[n.priority]
        header = f"<{pri}>1 {n.iso_timestamp} - {self.options.app_name} - {n.event_type} - "
        return header.encode() + n.encode(self.format)

    async def send(self, batch: Sequence[Notification]) -> None:
        assert self._socket is not None
        try:
            for n in batch:
                await self._socket.send(self._datagram(n))
        except OSError as exc:
            raise self.classify(exc) from None

    async def aclose(self) -> None:
        if self._socket is not None:
            await self._socket.aclose()
