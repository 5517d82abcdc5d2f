"""Finding transports: stevedore over the ``notifykit.transports`` entry points, by URL scheme.

The core imports no backend; installing a distribution that declares an entry point
in this group is all it takes to add one.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stevedore import DriverManager, ExtensionManager
from stevedore.exception import NoMatches

from ._config import TransportConfig
from ._errors import ConfigError, MissingDependencyError, UnknownTransportError
from ._settings import TransportSettings
from ._transport import Transport
from ._url import parse_url

__all__ = ["NAMESPACE", "install_hint", "installed_schemes", "load_transport_class", "resolve_transport"]

NAMESPACE = "notifykit.transports"

def installed_schemes() -> list[str]:
    """Names of every registered transport, whether or not its dependencies import."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def install_hint(ep: EntryPoint, missing: str) -> str:
    """How to install what an entry point's module could not import, read from its distribution's metadata.

    The requirement naming the missing module (``aio_pika`` → ``aio-pika``, ``nats`` →
    ``nats-py``) says whether an extra brings it (``pip install 'notifykit[amqp]'``);
    so a new transport needs no edit here, only its own requirements.
    """
    dist = ep.dist
    if dist is None:  # stevedore's cached entry points carry no distribution: find it in the metadata
        dist = next((found.dist for found in entry_points(group=ep.group or NAMESPACE, name=ep.name)
                     if found.value == ep.value and found.dist is not None), None)
    if dist is None:
        return ""
    module = _normal(missing.split(".", 1)[0])
    for requirement in dist.requires or []:
        name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0]
        if not name or not (_normal(name) == module or _normal(name).startswith(module + "_")):
            continue
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if extra:
            return f"; install it with: pip install '{dist.name}[{extra.group(1)}]'"
        return f"; install it with: pip install '{requirement.split(';', 1)[0].strip()}'"
    return f"; reinstall {dist.name} with its dependencies: pip install '{dist.name}'"


def _on_load_failure(_manager: ExtensionManager[Any], ep: EntryPoint, err: BaseException) -> None:
    if isinstance(err, ImportError):
        missing = getattr(err, "name", None) or str(err)
        raise MissingDependencyError(
            f"transport {ep.name!r} is installed but cannot import {missing!r}{install_hint(ep, missing)}"
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
