"""StoreRetry: the one retry loop of every network object store (Swift, S3 and any new one).

(Named apart from the notifier's ``notifykit.RetryPolicy``, which the dispatcher applies to
transports.) A store states its defaults and takes the ``retry_attempts`` /
``retry_backoff`` options with ``settings.take_retry(defaults)``; each request runs through
:meth:`StoreRetry.call`, which retries what the store calls transient and turns the last
failure into a ``TransientObjectStoreError`` fit for a backup's ``fail_reason``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ._errors import BackupConfigError, ObjectStoreError, TransientObjectStoreError

__all__ = ["StoreRetry"]

_T = TypeVar("_T")


# Set on the error of a call that used up its retries, so an outer call (a request around its
# authentication) passes it on instead of multiplying the attempts.
_GAVE_UP = "_store_retry_gave_up"


@dataclass(frozen=True, slots=True)
class StoreRetry:
    """Bounded retries with exponential backoff and full jitter: ``attempts`` tries in all,
    waits of up to ``backoff * 2**n`` s (at most ``max_backoff``)."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise BackupConfigError(f"retry_attempts must be >= 1, got {self.attempts!r}")
        for key, value in (("retry_backoff", self.backoff), ("max_backoff", self.max_backoff)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BackupConfigError(f"{key} must be a finite number >= 0 seconds, got {value!r}")

    def delay(self, failed_attempts: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (failed_attempts - 1)))

    async def call(self, store: str, action: str, what: str, attempt: Callable[[], Awaitable[_T]], *,
                   classify: Callable[[Exception, str], ObjectStoreError | None] | None = None) -> _T:
        """``await attempt()``, tried again while it fails transiently.

        An attempt raises ``TransientObjectStoreError(reason)`` for a failure worth another try
        and any other ObjectStoreError for one that is not; ``classify(exc, where)`` maps the
        store library's own exceptions onto those (an exception it returns None for, or any
        without a ``classify``, propagates as it is). After the last
        attempt the error reads ``<store>: cannot <action> <what>: <reason> (gave up after N
        attempt(s))``. Each retry is logged on the ``backup.<store>`` logger.
        """
        where = f"{store}: cannot {action} {what}"
        for n in range(1, self.attempts + 1):
            try:
                return await attempt()
            except TransientObjectStoreError as exc:
                if getattr(exc, _GAVE_UP, False):
                    raise
                failure: ObjectStoreError = exc
            except ObjectStoreError:
                raise
            except Exception as exc:
                mapped = None if classify is None else classify(exc, where)
                if mapped is None:
                    raise
                if not isinstance(mapped, TransientObjectStoreError):
                    raise mapped from None
                failure = mapped
            if n == self.attempts:
                gave_up = TransientObjectStoreError(f"{where}: {failure} (gave up after {self.attempts} attempt(s))")
                setattr(gave_up, _GAVE_UP, True)
                raise gave_up from None
            delay = self.delay(n)
            logging.getLogger(f"backup.{store}").warning("%s: %s %s failed (%s); attempt %d of %d in %.2fs", store,
                                                         action, what, failure, n + 1, self.attempts, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable")
