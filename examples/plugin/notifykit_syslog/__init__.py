"""A complete third-party notifykit transport: each notification as an RFC 5424 syslog
message over UDP, ``syslog://HOST:PORT?facility=16&app_name=notifykit``.

It imports only notifykit's public API; notifykit finds it by URL scheme through the
``notifykit.transports`` entry point declared in this distribution's pyproject.toml.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import ClassVar, Self

import anyio

from notifykit.transport import (
    ConfigError,
    Notification,
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


class SyslogTransport(Transport):
    """UDP syslog: a datagram per notification; send() returns once the kernel took them."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 200

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self.host = "127.0.0.1"
        self.port = 514
        self.facility = 16
        self.app_name = "notifykit"
        self._socket: anyio.abc.ConnectedUDPSocket | None = None

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        transport = cls(settings)
        if not settings.url.host:
            raise ConfigError(f"syslog URL {settings.url.redacted!r} needs a host: syslog://HOST:PORT")
        transport.host = settings.url.host
        transport.port = settings.url.port or 514
        transport.facility = settings.take_int("facility", 16, minimum=0) or 0
        if transport.facility > 23:
            raise ConfigError(f"syslog facility must be 0-23, got {transport.facility}")
        transport.app_name = settings.take_str("app_name", "notifykit") or "notifykit"
        settings.finish()  # any other option is a typo: say so
        return transport

    async def open(self) -> None:
        try:
            self._socket = await anyio.create_connected_udp_socket(self.host, self.port, family=socket.AF_INET)
        except OSError as exc:
            raise TransientError(f"cannot open UDP socket to {self.host}:{self.port}: {exc.strerror}") from None

    def _datagram(self, n: Notification) -> bytes:
        pri = self.facility * 8 + _SEVERITY[n.priority]
        header = f"<{pri}>1 {n.iso_timestamp} - {self.app_name} - {n.event_type} - "
        return header.encode() + n.encode(self.format)

    async def send(self, batch: Sequence[Notification]) -> None:
        assert self._socket is not None
        try:
            for n in batch:
                await self._socket.send(self._datagram(n))
        except OSError as exc:
            raise TransientError(f"syslog send failed: {exc.strerror}") from None

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.aclose()
