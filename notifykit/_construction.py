"""What a new Notifier is built from: its configuration with the constructor's keyword
arguments over it, the dead-letter sink, the spool, and one dispatcher per transport.

Apart from notifykit/_notifier.py, whose code is the Notifier's lifecycle and its notify
path: everything here runs once, in ``Notifier.__init__``, before any task exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ._clock import Clock
from ._config import NotifierConfig, TransportConfig
from ._deadletter import DeadLetterSink, JsonlDeadLetterSink, default_dead_letter_path
from ._dispatcher import Dispatcher
from ._errors import ConfigError
from ._loading import resolve_transport
from ._policies import OverflowPolicy
from ._spool import Spool, default_spool_path
from ._transport import Transport
from ._url import parse_url

__all__ = ["build_dispatchers", "dead_letter_sink", "notifier_config", "spool_for"]


def notifier_config(
    config: NotifierConfig | TransportConfig | Sequence[TransportConfig],
    *,
    publisher_id: str | None,
    close_timeout: float | None,
    max_payload_bytes: int | None,
    spool: str | os.PathLike[str] | None,
    status_path: str | os.PathLike[str] | None,
    status_interval: float | None,
    dead_letter_max_bytes: int | None,
) -> NotifierConfig:
    """One NotifierConfig: ``config`` as given, each keyword argument that is not None
    replacing its setting."""
    if isinstance(config, TransportConfig):
        config = NotifierConfig(transports=(config,))
    elif not isinstance(config, NotifierConfig):
        config = NotifierConfig(transports=tuple(config))
    if publisher_id is not None:
        config = replace(config, publisher_id=publisher_id)
    if close_timeout is not None:
        config = replace(config, close_timeout=close_timeout)
    if max_payload_bytes is not None:
        config = replace(config, max_payload_bytes=max_payload_bytes)
    if spool is not None:
        config = replace(config, spool_path=Path(spool))
    if status_path is not None:
        config = replace(config, status_path=Path(status_path))
    if status_interval is not None:
        config = replace(config, status_interval=status_interval)
    if dead_letter_max_bytes is not None:
        config = replace(config, dead_letter_max_bytes=dead_letter_max_bytes)
    return config


def dead_letter_sink(
    dead_letters: DeadLetterSink | str | os.PathLike[str] | None, configured: Path | None, max_bytes: int
) -> DeadLetterSink:
    if dead_letters is None:
        return JsonlDeadLetterSink(configured or default_dead_letter_path(), max_bytes=max_bytes)
    if isinstance(dead_letters, str | os.PathLike):
        return JsonlDeadLetterSink(dead_letters, max_bytes=max_bytes)
    return dead_letters


def spool_for(config: NotifierConfig) -> Spool | None:
    """The spool, when a transport is durable or spills to it (not opened yet: start() does)."""
    needs_spool = any(t.durable or t.overflow is OverflowPolicy.SPILL for t in config.transports)
    return Spool(config.spool_path or default_spool_path(), sync=config.spool_sync,
                 max_bytes=config.spool_max_bytes) if needs_spool else None


def build_dispatchers(config: NotifierConfig, sink: DeadLetterSink, clock: Clock,
                      spool: Spool | None) -> list[Dispatcher]:
    """One dispatcher per transport, in the configuration's order, each with its own name."""
    dispatchers: list[Dispatcher] = []
    for transport_config in config.transports:
        name = _unique_name(transport_config, dispatchers)
        transport = _build_transport(name, transport_config)
        dispatchers.append(Dispatcher(name, transport, transport_config, sink, clock, spool=spool))
    return dispatchers


def _unique_name(config: TransportConfig, dispatchers: Sequence[Dispatcher]) -> str:
    base = config.name or parse_url(config.url).scheme
    taken = {d.name for d in dispatchers}
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _build_transport(name: str, config: TransportConfig) -> Transport:
    """Find the transport class by URL scheme and let it validate its options."""
    cls, settings = resolve_transport(name, config)
    try:
        return cls.from_settings(settings)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"transport {name!r} ({settings.url.redacted}): {exc}") from None
