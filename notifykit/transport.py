"""What a transport author imports: the protocol, its settings, outcomes, wire formats and redaction.

A transport is one module that subclasses :class:`Transport` and one entry point in the
``notifykit.transports`` group (see docs/plugins.md); it needs nothing else from the core.
Its settings are the plugin toolkit's (``notifykit.plugin``), shared with the backup's
object stores. What the core's spans and AsyncAPI documents say about a transport, it
declares itself: ``Transport.messaging_system``, ``asyncapi_protocols`` and
``asyncapi_routes()`` (returning :class:`AsyncApiRoutes` of :class:`Route`).
"""

from ._asyncapi_routes import AsyncApiRoutes, Route, events_by_priority
from ._errors import BatchError, ConfigError, MissingDependencyError, PermanentError, TransientError, TransportError
from ._formats import WireFormat, cloudevent_attributes, decode_message
from ._loading import NAMESPACE, installed_schemes, load_transport_class
from ._message import Notification, Priority
from ._redact import REDACTED, Redactor, redact_text, redact_url
from ._settings import PluginSettings, TransportSettings
from ._tls import TLS_OPTIONS, TlsOptions
from ._transport import NoOptions, Tailable, Transport, TransportOptions
from ._url import HostPort, ParsedURL, parse_url

__all__ = [
    "NAMESPACE",
    "REDACTED",
    "TLS_OPTIONS",
    "AsyncApiRoutes",
    "BatchError",
    "ConfigError",
    "HostPort",
    "MissingDependencyError",
    "NoOptions",
    "Notification",
    "ParsedURL",
    "PermanentError",
    "PluginSettings",
    "Priority",
    "Redactor",
    "Route",
    "Tailable",
    "TlsOptions",
    "TransientError",
    "Transport",
    "TransportError",
    "TransportOptions",
    "TransportSettings",
    "WireFormat",
    "cloudevent_attributes",
    "decode_message",
    "events_by_priority",
    "installed_schemes",
    "load_transport_class",
    "parse_url",
    "redact_text",
    "redact_url",
]
