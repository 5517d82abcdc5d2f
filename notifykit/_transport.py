"""The transport protocol: the only thing a backend has to implement, in one shape for all of them.

A transport module holds three things: a frozen options dataclass whose
``from_settings(settings)`` takes every option the transport knows, a
:class:`Transport` subclass naming it as ``Options``, and that class's
``classify(exc)`` mapping its library's errors onto TransientError / PermanentError.
The core builds it — options first, then ``settings.finish()`` refuses any option
left over, the same way for every transport — and drives it with ``open()``,
``send()`` and ``aclose()``. Reading a URL back (``notifykit tail``) is a separate,
optional capability: :class:`Tailable`. What the core writes about a transport it cannot
know by itself — OpenTelemetry's ``messaging.system``, AsyncAPI's protocol and addresses —
the transport declares (``messaging_system``, ``asyncapi_protocols``, ``asyncapi_routes``).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, final, runtime_checkable

from ._asyncapi_routes import AsyncApiRoutes, Route
from ._errors import PermanentError, TransientError
from ._formats import WireFormat
from ._message import Notification, Priority
from ._settings import TransportSettings

__all__ = ["NoOptions", "Tailable", "Transport", "TransportOptions"]


class TransportOptions(Protocol):
    """A transport's options: a frozen dataclass built once, when the Notifier is built."""

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        """Take every option this transport knows with ``settings.take_*``; raise ConfigError on bad values."""
        ...


@dataclass(frozen=True, slots=True)
class NoOptions:
    """The options of a transport that takes none: any option given is refused by ``finish()``."""

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        return cls()


class Transport(abc.ABC):
    """A delivery backend, registered under the entry-point group ``notifykit.transports``.

    The core's dispatcher calls ``open()`` once (retrying on ``TransientError``),
    then ``send()`` with batches of at most ``max_batch_size`` notifications, one
    batch at a time, and finally ``aclose()``. ``send()`` returns only when every
    message of the batch is delivered (confirmed, acknowledged, 2xx, …) and raises
    ``TransientError`` (retry later), ``PermanentError`` (dead-letter) or
    ``BatchError`` (per-message outcome) otherwise. Backpressure, retry and
    dead-lettering are the dispatcher's job, never the transport's.
    """

    #: Wire format used when the configuration names none.
    default_format: ClassVar[WireFormat] = WireFormat.JSON
    #: Largest batch the dispatcher hands to ``send()``.
    max_batch_size: int = 100
    #: The frozen options dataclass; ``from_settings`` builds it from the URL and options table.
    Options: ClassVar[type[TransportOptions]] = NoOptions
    #: OpenTelemetry's ``messaging.system`` on this transport's spans (``rabbitmq``, ``kafka``: one of
    #: the convention's well-known names when one fits); None: the URL scheme.
    messaging_system: ClassVar[str | None] = None
    #: AsyncAPI's server ``protocol`` by URL scheme (``{"mqtts": "secure-mqtt"}``); a scheme not
    #: named here gets no server in the document (as ``log://`` and ``memory://``).
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {}

    def __init__(self, settings: TransportSettings, options: Any) -> None:
        self.settings = settings
        self.options = options

    @final
    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        """Build from settings, as the core does: ``Options.from_settings``, then ``settings.finish()``."""
        options = cls.Options.from_settings(settings)
        settings.finish()
        return cls(settings, options)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def format(self) -> WireFormat:
        return self.settings.format

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """The notifykit error for one of this transport's library errors, with the peer's own reason.

        Override it to mark what retrying cannot fix (a refused login, a message too
        large) as PermanentError; anything else is transient, so the core's retry budget
        (``retry_max_elapsed``) still decides in the end and nothing is lost.
        """
        return TransientError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """Where each of ``events`` (event type, priority) goes, read from the parsed options, for
        the AsyncAPI document (``notifykit asyncapi``); called on a transport built but never opened.

        The default is one channel without an address: AsyncAPI's way of saying it is not
        known in advance. Override it to name the addresses a consumer subscribes to.
        """
        return AsyncApiRoutes((Route(None, tuple(event for event, _ in events)),))

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise ``TransientError`` while the peer is unreachable."""

    @abc.abstractmethod
    async def send(self, batch: Sequence[Notification]) -> None:
        """Deliver every notification of the batch, or raise a TransportError."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once, after the last send()."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.name!r} {self.settings.url.redacted}>"


@runtime_checkable
class Tailable(Protocol):
    """A transport class that can read back what its URL receives (``notifykit tail``).

    Implemented as a classmethod ``tail(settings)`` yielding raw message bodies; the
    subscription must not disturb other consumers (a temporary queue, its own group).
    """

    def tail(self, settings: TransportSettings) -> AsyncIterator[bytes]: ...
