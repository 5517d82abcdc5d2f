"""RetryPolicy: how a network object store retries a request that failed transiently.

Each store brings its own defaults (a store URL's ``retry_attempts`` / ``retry_backoff``
options override them); the loop that uses it lives in the store, which knows which of its
failures are worth another try.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import BackupConfigError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter: ``attempts`` tries in all,
    waits of up to ``backoff * 2**n`` s (at most ``max_backoff``)."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise BackupConfigError(f"retry_attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0:
            raise BackupConfigError(f"retry_backoff must be >= 0 seconds, got {self.backoff}")
        if self.max_backoff < 0:
            raise BackupConfigError(f"max_backoff must be >= 0 seconds, got {self.max_backoff}")

    def delay(self, failed_attempts: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (failed_attempts - 1)))
