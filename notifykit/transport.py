"""What a transport author imports: the protocol, its settings, outcomes, wire formats and redaction.

A transport is one module that subclasses :class:`Transport` and one entry point in the
``notifykit.transports`` group (see docs/plugins.md); it needs nothing else from the core.
Its settings are the plugin toolkit's (``notifykit.plugin``), shared with the backup's
object stores.
"""

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
    "installed_schemes",
    "load_transport_class",
    "parse_url",
    "redact_text",
    "redact_url",
]
