"""Finding plugins: stevedore over an entry-point group, by name (a URL scheme).

One loader for every kind of plugin — transports (``notifykit.transports``) and the backup's
object stores (``notifykit.backup.stores``): the core imports no backend, installing a
distribution that declares an entry point in the group is all it takes to add one, and a
missing dependency is reported with an install hint read from that distribution's metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stevedore import DriverManager, ExtensionManager
from stevedore.exception import NoMatches

from ._config import _URL_KEYS, TransportConfig
from ._errors import ConfigError, MissingDependencyError, UnknownTransportError
from ._settings import TransportSettings
from ._transport import Transport
from ._url import parse_url

__all__ = [
    "CORE_URL_KEYS",
    "NAMESPACE",
    "install_hint",
    "installed_plugins",
    "installed_schemes",
    "load_plugin",
    "load_transport_class",
    "resolve_transport",
]

NAMESPACE = "notifykit.transports"
#: The query keys the core takes out of a transport URL itself (policies, topics, …): a
#: transport may not name an option like one of them, it would never receive it.
CORE_URL_KEYS = frozenset(_URL_KEYS)


def installed_plugins(group: str) -> list[str]:
    """Names registered in an entry-point group, whether or not their dependencies import."""
    return sorted({ep.name for ep in entry_points(group=group)})


def installed_schemes() -> list[str]:
    """Names of every registered transport, whether or not its dependencies import."""
    return installed_plugins(NAMESPACE)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def install_hint(ep: EntryPoint, missing: str) -> str:
    """How to install what an entry point's module could not import, read from its distribution's metadata.

    The requirement naming the missing module (``aio_pika`` → ``aio-pika``, ``nats`` →
    ``nats-py``) says whether an extra brings it (``pip install 'notifykit[amqp]'``);
    so a new plugin needs no edit here, only its own requirements.
    """
    dist = ep.dist
    if dist is None:  # stevedore's cached entry points carry no distribution: find it in the metadata
        dist = next((found.dist for found in entry_points(group=ep.group or NAMESPACE, name=ep.name)
                     if found.value == ep.value and found.dist is not None), None)
    if dist is None:
        return ""
    module = _normal(missing.split(".", 1)[0])
    # The plugin's own names: an extra called like it wins when several extras bring the module
    # (httpx comes with both the webhook transport's extra and the swift store's).
    own = {_normal(ep.name.split("+", 1)[0]), _normal(ep.value.split(":", 1)[0].rsplit(".", 1)[-1]).strip("_")}
    found: list[tuple[str, str | None]] = []
    for requirement in dist.requires or []:
        name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0]
        if not name or not (_normal(name) == module or _normal(name).startswith(module + "_")):
            continue
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        found.append((requirement.split(";", 1)[0].strip(), marker.group(1) if marker else None))
    if not found:
        return f"; reinstall {dist.name} with its dependencies: pip install '{dist.name}'"
    wanted, extra = next((item for item in found if item[1] and _normal(item[1]) in own), found[0])
    if extra:
        return f"; install it with: pip install '{dist.name}[{extra}]'"
    return f"; install it with: pip install '{wanted}'"


def load_plugin(group: str, name: str, *, kind: str, unknown: Callable[[str, list[str]], Exception],
                error: type[Exception] = ConfigError,
                missing: type[Exception] = MissingDependencyError) -> Any:
    """What entry point ``name`` of ``group`` names (usually a class), loaded.

    No such entry point raises ``unknown(name, installed)``; a module that cannot import one
    of its dependencies raises ``missing`` with the install hint from its distribution;
    any other failure raises ``error``. Checking what was loaded is the caller's part.
    """

    def on_load_failure(_manager: ExtensionManager[Any], ep: EntryPoint, err: BaseException) -> None:
        if isinstance(err, ModuleNotFoundError):  # not "cannot import name X from Y": that is the plugin's bug
            module = getattr(err, "name", None) or str(err)
            raise missing(f"{kind} {ep.name!r} is installed but cannot import {module!r}{install_hint(ep, module)}") \
                from err
        raise error(f"{kind} {ep.name!r} failed to load: {type(err).__name__}: {err}") from err

    try:
        manager = DriverManager(group, name, invoke_on_load=False, on_load_failure_callback=on_load_failure)
    except NoMatches:
        raise unknown(name, installed_plugins(group)) from None
    return manager.driver


def load_transport_class(scheme: str) -> type[Transport]:
    """The Transport class registered for ``scheme``, or an error listing what is installed."""
    driver = load_plugin(NAMESPACE, scheme, kind="transport", unknown=UnknownTransportError)
    if not (isinstance(driver, type) and issubclass(driver, Transport)):
        raise ConfigError(f"entry point {scheme!r} in {NAMESPACE} is not a notifykit Transport subclass")
    return driver


def resolve_transport(name: str, config: TransportConfig) -> tuple[type[Transport], TransportSettings]:
    """The transport class for ``config.url`` and the settings it is built from: the URL's own
    query options, overridden by the config's ``options`` table. The core's own URL keys are
    reserved: a transport that takes an option named like one is refused when it is built."""
    parsed = parse_url(config.url)
    cls = load_transport_class(parsed.scheme)
    options: dict[str, list[str]] = {}
    for key, value in parsed.query:
        options.setdefault(key, []).append(value)
    for key, option in config.options.items():
        options[key] = [option] if isinstance(option, str) else list(option)
    return cls, TransportSettings.build(name, parsed, config.format or cls.default_format, config.topics, options,
                                        reserved=CORE_URL_KEYS)
