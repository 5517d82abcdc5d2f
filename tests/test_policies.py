"""Retry policy arithmetic (full-jitter exponential backoff)."""

from __future__ import annotations

import random

import pytest

from notifykit import RetryPolicy


def test_retry_delay_bounds() -> None:
    policy = RetryPolicy(initial_delay=0.1, max_delay=5.0, multiplier=2.0)
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(5.0, 0.1 * 2**attempt)
        assert policy.ceiling(attempt) == pytest.approx(ceiling)
        samples = [policy.delay(attempt, rng) for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.9 * ceiling and min(samples) < 0.1 * ceiling  # full jitter spans the range
    assert policy.ceiling(10_000) == 5.0
    assert RetryPolicy(max_elapsed=10).gives_up(3, 10.0)
    assert not RetryPolicy(max_elapsed=10).gives_up(3, 9.9)
    assert RetryPolicy(max_attempts=3, max_elapsed=None).gives_up(3, 0)
