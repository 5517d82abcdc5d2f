"""Explicit policy objects for one transport: queue overflow, retry, circuit breaker, filter."""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ._choices import parse_choice
from ._message import Priority
from ._numbers import check_number

__all__ = ["CircuitPolicy", "Filter", "OverflowPolicy", "RetryPolicy"]


class OverflowPolicy(enum.StrEnum):
    """What ``notify()`` does when a transport's queue is full.

    ``block`` waits for room, in arrival order, up to ``block_timeout``, after which
    ``notify()`` raises QueueFullError (the caller keeps the notification; counted
    ``refused``); ``drop_newest`` drops the new notification;
    ``drop_oldest`` drops the oldest queued one; ``spill`` commits it to the durable
    spool (the append-only log) and keeps spooling until the backlog is drained. Drops are counted
    and logged.
    """

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    SPILL = "spill"

    @classmethod
    def parse(cls, value: OverflowPolicy | str) -> OverflowPolicy:
        return parse_choice(cls, value, "overflow policy")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures.

    The n-th retry waits ``uniform(0, min(max_delay, initial_delay * multiplier**n))``
    (AWS's "full jitter"); after ``max_elapsed`` seconds (or ``max_attempts``) of
    failing, the batch is dead-lettered.
    """

    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    max_elapsed: float | None = 300.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        check_number("retry.initial_delay", self.initial_delay, minimum=0)
        check_number("retry.max_delay", self.max_delay, minimum=0)
        check_number("retry.multiplier", self.multiplier, minimum=1)
        if self.max_elapsed is not None:  # 0: give up after the first failure
            check_number("retry.max_elapsed", self.max_elapsed, minimum=0)
        if self.max_attempts is not None:
            check_number("retry.max_attempts", self.max_attempts, kind=int, minimum=1)

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent: 2.0**1100 overflows a float.
        return min(self.max_delay, self.initial_delay * self.multiplier ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A full-jitter delay for retry number ``attempt`` (0-based)."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))

    def gives_up(self, attempts: int, elapsed: float) -> bool:
        """True once the retry budget (attempts made, seconds since first failure) is spent."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed >= self.max_elapsed


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """After ``failure_threshold`` consecutive failures stop calling the transport
    for ``reset_timeout`` seconds, then let one trial batch through (half-open)."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_number("circuit.failure_threshold", self.failure_threshold, kind=int, minimum=1)
        check_number("circuit.reset_timeout", self.reset_timeout, minimum=0)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which notifications a transport takes: event_type globs and a minimum priority."""

    event_types: Sequence[str] = field(default=("*",))
    min_priority: Priority | None = None

    def accepts(self, event_type: str, priority: Priority) -> bool:
        if self.min_priority is not None and priority.level < self.min_priority.level:
            return False
        if self.event_types == ("*",):  # the default: no pattern matching on the hot path
            return True
        return any(fnmatchcase(event_type, pattern) for pattern in self.event_types)
