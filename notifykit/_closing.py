"""What a closing Notifier does after its workers stopped, and what an unclosed one says.

Leftovers are spooled (durable) or dead-lettered with the deadline and the transport's
last error, every transport is closed within the deadline, the spool is closed. Nothing
here raises into the caller: a failure is logged and shown as the task's last error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from ._deadletter import DeadLetterSink
from ._dispatcher import Dispatcher
from ._spool import SPOOL_TASK, Spool
from ._stats import TransportState
from ._supervisor import Supervisor

__all__ = ["put_away", "warn_unclosed"]

log = logging.getLogger("notifykit")


async def put_away(dispatchers: Sequence[Dispatcher], deadline: float, sink: DeadLetterSink, spool: Spool | None,
                   supervisor: Supervisor) -> None:
    """Dead-letter (or keep in the spool) what the deadline left behind, then close every
    transport and the spool."""
    for dispatcher in dispatchers:
        reason = f"not delivered before the close deadline ({deadline}s)"
        if dispatcher.stats.last_error:  # the cause, not only the deadline, goes with each letter
            reason = f"{reason}; last error: {dispatcher.stats.last_error}"
        try:
            left, spooled = await dispatcher.dead_letter_leftovers(reason)
        except Exception as exc:
            supervisor.failed(dispatcher.task_name, exc, "could not put its leftovers away at close")
            left = spooled = 0
        if left:
            log.warning("notifykit transport %r: %d notification(s) undelivered at close were"
                        " dead-lettered to %r", dispatcher.name, left, sink)
        if spooled:
            log.warning("notifykit transport %r: %d notification(s) not yet confirmed are kept in %r;"
                        " the next Notifier on this spool replays them", dispatcher.name, spooled, spool)
        with anyio.move_on_after(max(deadline, 1.0)):
            try:
                await dispatcher.transport.aclose()
            except Exception:
                log.exception("notifykit transport %r failed to close", dispatcher.name)
        dispatcher.stats.state = TransportState.CLOSED
    if spool is not None:
        try:
            await spool.aclose()
        except Exception as exc:
            supervisor.failed(SPOOL_TASK, exc, f"could not close {spool!r}")


def warn_unclosed(publisher_id: str, dispatchers: Sequence[Dispatcher]) -> None:
    """One warning for a Notifier that ended without aclose(): what each transport loses."""
    lost, kept = [], []
    for dispatcher in dispatchers:
        stats = dispatcher.snapshot()
        waiting = stats.queue_depth + stats.in_flight
        if dispatcher.spooling and stats.spooled:
            kept.append(f"{dispatcher.name!r} ({stats.spooled})")
        elif waiting:
            lost.append(f"{dispatcher.name!r} ({waiting})")
    if not (lost or kept):
        return
    text = f"notifykit Notifier {publisher_id!r} was not closed (no aclose() or 'async with')"
    if lost:
        text += f"; notification(s) queued in memory are lost: {', '.join(lost)}"
    if kept:
        text += f"; notification(s) in the spool are kept for the next Notifier: {', '.join(kept)}"
    try:
        log.warning(text)
    except Exception:  # interpreter shutdown: logging may be gone
        pass
