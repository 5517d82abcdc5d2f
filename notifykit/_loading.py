"""Finding transports: stevedore over the ``notifykit.transports`` entry points, by URL scheme.

The core imports no backend; installing a distribution that declares an entry point
in this group is all it takes to add one.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stevedore import DriverManager, ExtensionManager
from stevedore.exception import NoMatches

from ._config import TransportConfig
from ._errors import ConfigError, MissingDependencyError, UnknownTransportError
from ._settings import TransportSettings
from ._transport import Transport
from ._url import parse_url

__all__ = ["NAMESPACE", "installed_schemes", "load_transport_class", "resolve_transport"]

NAMESPACE = "notifykit.transports"

#: The extra that brings a built-in transport's dependencies, for the error message.
_EXTRAS = {"amqp": "amqp", "amqps": "amqp", "kafka": "kafka", "kafka+ssl": "kafka", "http": "webhook", "https": "webhook"}


def installed_schemes() -> list[str]:
    """Names of every registered transport, whether or not its dependencies import."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def _on_load_failure(_manager: ExtensionManager[Any], ep: EntryPoint, err: BaseException) -> None:
    if isinstance(err, ImportError):
        extra = _EXTRAS.get(ep.name)
        hint = f"; install it with: pip install 'notifykit[{extra}]'" if extra else ""
        missing = getattr(err, "name", None) or str(err)
        raise MissingDependencyError(
            f"transport {ep.name!r} is installed but cannot import {missing!r}{hint}"
        ) from err
    raise ConfigError(f"transport {ep.name!r} failed to load: {type(err).__name__}: {err}") from err


def load_transport_class(scheme: str) -> type[Transport]:
    """The Transport class registered for ``scheme``, or an error listing what is installed."""
    try:
        manager = DriverManager(
            NAMESPACE,
            scheme,
            invoke_on_load=False,
            on_load_failure_callback=_on_load_failure,
        )
    except NoMatches:
        raise UnknownTransportError(scheme, installed_schemes()) from None
    driver = manager.driver
    if not (isinstance(driver, type) and issubclass(driver, Transport)):
        raise ConfigError(f"entry point {scheme!r} in {NAMESPACE} is not a notifykit Transport subclass")
    return driver


def resolve_transport(name: str, config: TransportConfig) -> tuple[type[Transport], TransportSettings]:
    """The transport class for ``config.url`` and the settings it is built from: the URL's own
    query options, overridden by the config's ``options`` table."""
    parsed = parse_url(config.url)
    cls = load_transport_class(parsed.scheme)
    options: dict[str, list[str]] = {}
    for key, value in parsed.query:
        options.setdefault(key, []).append(value)
    for key, option in config.options.items():
        options[key] = [option] if isinstance(option, str) else list(option)
    return cls, TransportSettings.build(name, parsed, config.format or cls.default_format, config.topics, options)
