"""``notifykit asyncapi --config FILE``: the AsyncAPI document of an application's notifications.

The application registers its :class:`~notifykit.EventCatalogue` under a name in the
entry-point group ``notifykit.catalogues`` (an ``EventCatalogue``, or a function without
arguments that returns one)::

    [project.entry-points."notifykit.catalogues"]
    billing = "billing.events:catalogue"

and ``--catalogue billing`` picks it (the only one registered needs no name), or
``--catalogue billing.events:catalogue`` names the object directly. The channels are those
of the transports of FILE, the application's notifykit TOML configuration, and the
messages' ``publisher_id`` is its ``publisher_id``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ._config import NotifierConfig
from ._errors import ConfigError
from .asyncapi import EventCatalogue

__all__ = ["CATALOGUE_GROUP", "application_asyncapi", "find_catalogue"]

CATALOGUE_GROUP = "notifykit.catalogues"


def find_catalogue(spec: str | None) -> EventCatalogue:
    """The catalogue ``spec`` names (``MODULE:ATTRIBUTE``, or a name registered in
    ``notifykit.catalogues``; None: the only one registered). ConfigError says why not."""
    if spec is not None and ":" in spec:
        module, _, attribute = spec.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--catalogue {spec}: cannot load it ({type(exc).__name__}: {exc})") from None
        return _catalogue(found, f"--catalogue {spec}")
    registered = {ep.name: ep for ep in entry_points(group=CATALOGUE_GROUP)}
    if spec is None:
        if len(registered) != 1:
            names = ", ".join(sorted(registered)) or "none"
            raise ConfigError(f"name the catalogue with --catalogue NAME or MODULE:ATTRIBUTE (registered in"
                              f" {CATALOGUE_GROUP}: {names})")
        [spec] = registered
    if spec not in registered:
        raise ConfigError(f"--catalogue {spec}: no catalogue of that name in {CATALOGUE_GROUP} (registered:"
                          f" {', '.join(sorted(registered)) or 'none'}); or give MODULE:ATTRIBUTE")
    entry = registered[spec]
    try:
        loaded = entry.load()
    except Exception as exc:  # the application's import: whatever it raises is one line
        raise ConfigError(f"catalogue {spec!r} ({entry.value}): cannot load it ({type(exc).__name__}: {exc})") from None
    return _catalogue(loaded, f"catalogue {spec!r} ({entry.value})")


def _catalogue(found: Any, where: str) -> EventCatalogue:
    """``found`` itself, or what calling it returns, when that is an EventCatalogue."""
    if not isinstance(found, EventCatalogue) and callable(found):
        try:
            found = found()
        except Exception as exc:  # the application's code: one line naming it
            raise ConfigError(f"{where}: calling it failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(found, EventCatalogue):
        raise ConfigError(f"{where}: is a {type(found).__name__}, not a notifykit EventCatalogue (or a function"
                          " returning one)")
    return found


def application_asyncapi(config_path: Path, spec: str | None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of catalogue ``spec`` sent through ``config_path``'s transports."""
    config = NotifierConfig.from_toml(config_path)
    return find_catalogue(spec).document(config.transports, publisher_id=config.publisher_id)
