"""Every error notifykit raises, in one place so callers can catch by family; but for
``QueueFullError``, which hands the caller its Notification back and so stands beside it
in ``_message.py``."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BatchError",
    "ConfigError",
    "InvalidNotificationError",
    "MissingDependencyError",
    "NotifierClosedError",
    "NotifyKitError",
    "PermanentError",
    "SignatureError",
    "TransientError",
    "TransportError",
    "UnknownTransportError",
]


class NotifyKitError(Exception):
    """Base class of every error raised by notifykit."""


class ConfigError(NotifyKitError, ValueError):
    """A URL, TOML file or option is malformed or names something unknown."""


class UnknownTransportError(ConfigError):
    """No installed transport serves the URL scheme."""

    def __init__(self, scheme: str, installed: list[str]) -> None:
        self.scheme = scheme
        self.installed = installed
        names = ", ".join(installed) if installed else "none"
        super().__init__(f"unknown transport scheme {scheme!r}; installed transports: {names}")


class MissingDependencyError(ConfigError):
    """A transport is registered but its optional dependencies are not installed."""


class InvalidNotificationError(NotifyKitError, ValueError):
    """The notification cannot be sent as given (event type, payload, context)."""


class NotifierClosedError(NotifyKitError, RuntimeError):
    """notify() was called on a Notifier that is not open."""


class TransportError(NotifyKitError):
    """Raised by a transport's send(); tells the dispatcher whether to retry."""


class TransientError(TransportError):
    """Delivery failed but may succeed later (broker down, timeout, 5xx)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(TransportError):
    """Delivery can never succeed for this message (rejected, too large, forbidden)."""


class BatchError(TransportError):
    """Part of a batch failed; messages whose index is not in ``failures`` were sent."""

    def __init__(self, failures: Mapping[int, TransientError | PermanentError]) -> None:
        self.failures = dict(failures)
        kinds = sorted({type(e).__name__ for e in self.failures.values()})
        super().__init__(f"{len(self.failures)} message(s) of the batch failed ({', '.join(kinds)})")

    @staticmethod
    def record(failures: dict[int, TransientError | PermanentError], index: int,
               error: TransientError | PermanentError) -> None:
        """Note one message's failure; a message failing twice (on two topics) keeps the permanent
        error, since retrying cannot help it."""
        if index not in failures or isinstance(error, PermanentError):
            failures[index] = error

    @classmethod
    def raise_if_any(cls, failures: Mapping[int, TransientError | PermanentError], batch_size: int) -> None:
        """What ``send()`` ends with: nothing when every message was sent; the first error itself when
        every message failed transiently (the whole batch waits out one backoff); else a BatchError."""
        if not failures:
            return
        if len(failures) == batch_size and all(isinstance(e, TransientError) for e in failures.values()):
            raise failures[min(failures)]
        raise cls(failures)


class SignatureError(NotifyKitError, ValueError):
    """A signed webhook request is unsigned, expired (possible replay) or tampered with."""
