"""Test helpers for applications and transports: a steerable in-memory transport and clocks.

``memory://`` URLs build a :class:`MemoryTransport`; reach it with
``notifier.transports[name]`` and steer it (``fail_next``, ``stall``, …). A
:class:`ManualClock` passed as ``Notifier(clock=…)`` makes retry and circuit timing
instant and observable. ``Clock`` and ``EventLoopClock`` live in ``notifykit``; they are
re-exported here for tests written against this module.
"""

from ._clock import Clock, EventLoopClock, ManualClock
from ._memory import MemoryTransport

__all__ = ["Clock", "EventLoopClock", "ManualClock", "MemoryTransport"]
