"""notifykit: async notifications over pluggable transports.

Public API only; everything else lives in private ``_modules``.
"""

from ._clock import Clock, EventLoopClock
from ._config import NotifierConfig, TransportConfig
from ._deadletter import (
    DeadLetter,
    DeadLetterSink,
    JsonlDeadLetterSink,
    MemoryDeadLetterSink,
    default_dead_letter_path,
    read_dead_letters,
    rewrite_dead_letters,
)
from ._errors import (
    BatchError,
    ConfigError,
    InvalidNotificationError,
    MissingDependencyError,
    NotifierClosedError,
    NotifyKitError,
    PermanentError,
    QueueFullError,
    SignatureError,
    TransientError,
    TransportError,
    UnknownTransportError,
)
from ._formats import WireFormat, cloudevent_attributes, decode_message
from ._loading import NAMESPACE, installed_schemes, load_transport_class
from ._message import ContextLike, Notification, Priority, RequestContext
from ._notifier import Notifier, PreparedNotifier, SupportsNotify
from ._policies import CircuitPolicy, Filter, OverflowPolicy, RetryPolicy
from ._redact import Redactor, redact_text
from ._settings import TransportSettings
from ._spool import Spool, default_spool_path
from ._stats import TransportState, TransportStats, render_prometheus
from ._supervisor import TaskHealth, TaskState
from ._transport import Transport
from ._url import ParsedURL, parse_url, redact_url

__version__ = "0.1.0"

__all__ = [
    "NAMESPACE",
    "BatchError",
    "CircuitPolicy",
    "Clock",
    "ConfigError",
    "ContextLike",
    "DeadLetter",
    "DeadLetterSink",
    "EventLoopClock",
    "Filter",
    "InvalidNotificationError",
    "JsonlDeadLetterSink",
    "MemoryDeadLetterSink",
    "MissingDependencyError",
    "Notification",
    "Notifier",
    "NotifierClosedError",
    "NotifierConfig",
    "NotifyKitError",
    "OverflowPolicy",
    "ParsedURL",
    "PermanentError",
    "PreparedNotifier",
    "Priority",
    "QueueFullError",
    "Redactor",
    "RequestContext",
    "RetryPolicy",
    "SignatureError",
    "Spool",
    "SupportsNotify",
    "TaskHealth",
    "TaskState",
    "TransientError",
    "Transport",
    "TransportConfig",
    "TransportError",
    "TransportSettings",
    "TransportState",
    "TransportStats",
    "UnknownTransportError",
    "WireFormat",
    "cloudevent_attributes",
    "decode_message",
    "default_dead_letter_path",
    "default_spool_path",
    "installed_schemes",
    "load_transport_class",
    "parse_url",
    "read_dead_letters",
    "redact_text",
    "redact_url",
    "render_prometheus",
    "rewrite_dead_letters",
    "__version__",
]
