"""``memory://``: the entry point of the in-memory test transport, which lives in ``notifykit.testing``."""

from notifykit.testing import MemoryTransport

__all__ = ["MemoryTransport"]
