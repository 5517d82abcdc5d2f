"""The transport protocol: the only thing a backend has to implement."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Self

from ._errors import ConfigError
from ._formats import WireFormat
from ._message import Notification
from ._settings import TransportSettings

__all__ = ["Transport"]


class Transport(abc.ABC):
    """A delivery backend, registered under the entry-point group ``notifykit.transports``.

    The core's dispatcher calls ``open()`` once (retrying on ``TransientError``),
    then ``send()`` with batches of at most ``max_batch_size`` notifications, one
    batch at a time, and finally ``close()``. ``send()`` returns only when every
    message of the batch is delivered (confirmed, acknowledged, 2xx, …) and raises
    ``TransientError`` (retry later), ``PermanentError`` (dead-letter) or
    ``BatchError`` (per-message outcome) otherwise. Backpressure, retry and
    dead-lettering are the dispatcher's job, never the transport's.
    """

    #: Wire format used when the configuration names none.
    default_format: ClassVar[WireFormat] = WireFormat.JSON
    #: Largest batch the dispatcher hands to ``send()``.
    max_batch_size: int = 100

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        """Build from settings; take every option you know and call ``settings.finish()``."""
        transport = cls(settings)
        settings.finish()
        return transport

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def format(self) -> WireFormat:
        return self.settings.format

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise ``TransientError`` while the peer is unreachable."""

    @abc.abstractmethod
    async def send(self, batch: Sequence[Notification]) -> None:
        """Deliver every notification of the batch, or raise a TransportError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once, after the last send()."""

    @classmethod
    def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Consume what this transport's URL receives, yielding raw message bodies (for ``notifykit tail``).

        Optional: a transport that can be read back (a broker) overrides it; the
        subscription must not disturb other consumers (e.g. a temporary queue).
        """
        raise ConfigError(f"transport {settings.url.scheme!r} cannot be tailed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.name!r} {self.settings.url.redacted}>"
