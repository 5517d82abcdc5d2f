"""notifykit: async notifications over pluggable transports.

What an application uses is here. Transport authors import from ``notifykit.transport``,
tests from ``notifykit.testing``; dead-letter tools are in ``notifykit.deadletters`` and
webhook signatures in ``notifykit.signing``. Everything else lives in private ``_modules``.
"""

from ._clock import Clock, EventLoopClock
from ._config import NotifierConfig, TransportConfig
from ._errors import (
    ConfigError,
    InvalidNotificationError,
    MissingDependencyError,
    NotifierClosedError,
    NotifyKitError,
    UnknownTransportError,
)
from ._formats import WireFormat
from ._message import ContextLike, Notification, Priority, QueueFullError, RequestContext
from ._notifier import Notifier
from ._notify_api import PreparedNotifier, SupportsNotify
from ._policies import CircuitPolicy, Filter, OverflowPolicy, RetryPolicy
from ._redact import redact_text, redact_url
from ._stats import TransportState, TransportStats, render_prometheus
from ._supervisor import TaskHealth, TaskState
from .asyncapi import EventCatalogue, EventType

__version__ = "0.1.0"

__all__ = [
    "CircuitPolicy",
    "Clock",
    "ConfigError",
    "ContextLike",
    "EventCatalogue",
    "EventLoopClock",
    "EventType",
    "Filter",
    "InvalidNotificationError",
    "MissingDependencyError",
    "Notification",
    "Notifier",
    "NotifierClosedError",
    "NotifierConfig",
    "NotifyKitError",
    "OverflowPolicy",
    "PreparedNotifier",
    "Priority",
    "QueueFullError",
    "RequestContext",
    "RetryPolicy",
    "SupportsNotify",
    "TaskHealth",
    "TaskState",
    "TransportConfig",
    "TransportState",
    "TransportStats",
    "UnknownTransportError",
    "WireFormat",
    "__version__",
    "redact_text",
    "redact_url",
    "render_prometheus",
]
