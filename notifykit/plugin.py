"""The plugin toolkit: what every kind of plugin — a transport, an object store — is built with.

One settings parser with one vocabulary and one set of checks (:class:`PluginSettings`:
``take_str/int/float/duration/bool/choice/list/secret``, then ``finish()``, which the core
calls), one URL parser (:func:`parse_url`: several hosts, redaction), and one entry-point
loader (:func:`load_plugin`) whose missing-dependency error carries an install hint read
from the plugin's own distribution metadata. Transport authors find all of it in
``notifykit.transport`` too; the backup's object stores build on it in
``notifykit.backup.plugin``. See docs/plugins.md.
"""

from ._errors import ConfigError, MissingDependencyError
from ._loading import install_hint, installed_plugins, load_plugin
from ._redact import REDACTED, Redactor, redact_text, redact_url
from ._settings import FALSE_WORDS, TRUE_WORDS, PluginSettings
from ._url import HostPort, ParsedURL, parse_url

__all__ = [
    "FALSE_WORDS",
    "REDACTED",
    "TRUE_WORDS",
    "ConfigError",
    "HostPort",
    "MissingDependencyError",
    "ParsedURL",
    "PluginSettings",
    "Redactor",
    "install_hint",
    "installed_plugins",
    "load_plugin",
    "parse_url",
    "redact_text",
    "redact_url",
]
