"""The NATS transport's side of nats-py: how its client connects and closes, and the stream it fills.

The first connection fails fast (so ``open()`` reports to the dispatcher); once connected,
nats-py reconnects by itself. The JetStream stream is used as it exists, never changed (its
owner configured it): what differs from what notifykit would have created is returned, for
the transport to say once; a missing one is created.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Protocol

import anyio
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from notifykit.transport import PermanentError

__all__ = ["DEFAULT_DUPLICATE_WINDOW", "ClientOptions", "close_quietly", "connect_arguments", "covers", "ensure_stream", "have_nkeys"]

log = logging.getLogger("notifykit.nats")

#: A stream notifykit creates keeps message ids this long: a re-send within it is dropped.
DEFAULT_DUPLICATE_WINDOW = 120.0


class ClientOptions(Protocol):
    """What the client and the stream read of nats.py's ``NatsOptions``, described here so this module
    imports nothing above it."""

    @property
    def servers(self) -> tuple[str, ...]: ...
    @property
    def client_name(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def nkey_seed(self) -> str | None: ...
    @property
    def creds_file(self) -> str | None: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def reconnect_time_wait(self) -> float: ...
    @property
    def stream(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def create_stream(self) -> bool: ...
    @property
    def storage(self) -> str: ...
    @property
    def replicas(self) -> int: ...
    @property
    def duplicate_window(self) -> float: ...
    @property
    def max_age(self) -> float: ...


def connect_arguments(options: ClientOptions, tls: ssl.SSLContext | None, **callbacks: Any) -> dict[str, Any]:
    """``Client.connect()``'s arguments for the first connection: each server tried twice at most and a
    refused login raised at once, so open() reports to the dispatcher promptly (nats-py would
    otherwise retry forever)."""
    kwargs: dict[str, Any] = dict(
        servers=list(options.servers), name=options.client_name, connect_timeout=options.connect_timeout,
        reconnect_time_wait=options.reconnect_time_wait, allow_reconnect=False, max_reconnect_attempts=1, tls=tls,
        user=options.user, password=options.password, token=options.token, **callbacks,
    )
    if options.creds_file:
        kwargs["user_credentials"] = options.creds_file
    if options.nkey_seed:
        kwargs["nkeys_seed"] = options.nkey_seed
    return kwargs


def have_nkeys() -> bool:
    """Whether nats-py can sign with an NKey (``nkey_seed``, ``creds_file``): it needs the nkeys package."""
    try:
        import nkeys  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


async def close_quietly(nc: Client) -> None:
    with anyio.move_on_after(5):
        try:
            await nc.close()
        except Exception as exc:  # a connection that never opened may fail to close; nothing is lost
            log.debug("notifykit nats: closing a connection failed: %s", type(exc).__name__)


async def ensure_stream(js: JetStreamContext, o: ClientOptions, name: str, where: str) -> list[str]:
    """Find the stream, or create it (file storage, ``<subject>.>``, a 2-minute duplicate window);
    returns how an existing one differs from that. nats-py's errors pass through."""
    try:
        info = await js.stream_info(o.stream)
    except nats.js.errors.NotFoundError:
        if not o.create_stream:
            raise PermanentError(f"{where}: stream {o.stream!r} does not exist (create_stream=false)") from None
        await js.add_stream(api.StreamConfig(
            name=o.stream, subjects=[f"{o.subject}.>"], storage=api.StorageType(o.storage),
            num_replicas=o.replicas, duplicate_window=o.duplicate_window, max_age=o.max_age or None,
        ))
        log.info("notifykit nats %r: created stream %r (subjects %s.>, %s storage, duplicate window %gs)",
                 name, o.stream, o.subject, o.storage, o.duplicate_window)
        return []
    return _differences(info.config, o.subject)


def _differences(config: api.StreamConfig, subject: str) -> list[str]:
    subjects = config.subjects or []
    notes = []
    if not any(covers(s, subject) for s in subjects):
        notes.append(f"its subjects {subjects} do not cover {subject}.>: "
                     "notifications of other event types will not be stored")
    window = config.duplicate_window or 0
    if window < DEFAULT_DUPLICATE_WINDOW:
        notes.append(f"its duplicate window is {window:g}s: a re-send after that is stored twice")
    return notes


def covers(pattern: str, prefix: str) -> bool:
    """Whether stream subject ``pattern`` matches every ``<prefix>.<event_type>`` subject."""
    wanted = prefix.split(".")
    for i, token in enumerate(pattern.split(".")):
        if token == ">":
            return i <= len(wanted)
        if i >= len(wanted) or token not in ("*", wanted[i]):
            return False
    return False
