"""Object stores by URL: the ``notifykit.backup.stores`` entry points, built with the core's plugin toolkit.

The URL's scheme names the store (a plain path means ``file``, the posix store). Stores are
plugins exactly as transports are (``notifykit.plugin``): the same loader (install hint from
the store's own distribution), the same URL parser and the same option vocabulary and
checks; the store's ``from_settings`` takes its options and the core then calls
``settings.finish()``. Installing a distribution that declares an entry point in this group
is all it takes to add a store:

    [project.entry-points."notifykit.backup.stores"]
    mystore = "my_package:MyObjectStore"      # a class with from_settings(settings)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

from notifykit.plugin import ConfigError, ParsedURL, PluginSettings, installed_plugins, load_plugin, parse_url

from ._errors import BackupConfigError, UnknownStoreError
from ._objectstore import ObjectStore
from ._retry import StoreRetry

__all__ = ["NAMESPACE", "StoreFactory", "StoreSettings", "installed_stores", "load_store_class", "store_from_url"]

NAMESPACE = "notifykit.backup.stores"


class StoreFactory(Protocol):
    """What an entry point in ``notifykit.backup.stores`` names: usually the store class."""

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> ObjectStore:
        """The store for ``settings`` (no I/O yet: ``open()`` connects). Take every option
        with ``settings.take_*``; the core calls ``settings.finish()`` afterwards."""
        ...


@dataclass(slots=True)
class StoreSettings(PluginSettings):
    """A store URL taken apart, with its options (the URL query, then the TOML
    ``store_options`` table over it). Secrets (``password``, options) stay out of the repr."""

    error: ClassVar[type[Exception]] = BackupConfigError

    scheme: str
    url: ParsedURL | None = field(default=None, repr=False)  # None for a plain directory path
    path: str = ""
    options: dict[str, list[str]] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    taken: set[str] = field(default_factory=set, repr=False)
    reserved: frozenset[str] = field(default=frozenset(), repr=False)
    secrets: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def parse(cls, url: str, options: Mapping[str, Any] | None = None,
              env: Mapping[str, str] | None = None) -> StoreSettings:
        """``SCHEME://[USER[:SECRET]@]HOST[:PORT][,HOST2…][/PATH][?k=v&…]``, or a plain path (``file``)."""
        env = os.environ if env is None else env
        if "://" not in url:
            settings = cls("file", None, url, env=env)
        else:
            try:
                parsed = parse_url(url)
            except ConfigError as exc:
                raise BackupConfigError(f"store URL: {exc}") from None
            settings = cls(parsed.scheme, parsed, parsed.path, env=env)
            for key, value in parsed.query:
                settings.options.setdefault(key, []).append(value)
        for key, value in (options or {}).items():
            if value is not None:
                settings.options[str(key)] = _toml_values(key, value)
        return settings

    @property
    def name(self) -> str:
        """The store's scheme: what the errors name it by."""
        return self.scheme

    @property
    def host(self) -> str | None:
        return self.url.host if self.url else None

    @property
    def port(self) -> int | None:
        return self.url.port if self.url else None

    @property
    def username(self) -> str | None:
        return self.url.username if self.url else None

    @property
    def password(self) -> str | None:
        return self.url.password if self.url else None

    @property
    def netloc(self) -> str:
        """``host[:port][,host2[:port]…]`` without credentials."""
        if self.url is None:
            return ""
        return ",".join(h.netloc() for h in self.url.hosts)

    @property
    def location(self) -> str:
        """The URL without credentials or options: safe to print and to record."""
        if self.scheme == "file" and not self.host:
            return self.path
        return f"{self.scheme}://{self.netloc}{self.path}"

    def _where(self, key: str) -> str:
        return f"{self.scheme} store: {key}"

    def _unknown(self, unknown: Sequence[str]) -> str:
        return (f"{self.scheme} store: unknown option(s) {', '.join(map(repr, unknown))}"
                f" (allowed: {', '.join(sorted(self.taken)) or 'none'})")

    def take_retry(self, defaults: StoreRetry) -> StoreRetry:
        """The store's retry policy: ``retry_attempts`` (>= 1) and ``retry_backoff`` (seconds,
        finite, >= 0) over the store's own defaults."""
        return StoreRetry(self.take_int("retry_attempts", defaults.attempts, minimum=1),
                          self.take_duration("retry_backoff", defaults.backoff), defaults.max_backoff)


def _toml_values(key: object, value: object) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | int | float):
        return [str(value)]
    raise BackupConfigError(f"store_options.{key} must be a string, number or boolean, got {value!r}")


def installed_stores() -> list[str]:
    """Every registered store scheme, whether or not its dependencies import."""
    return installed_plugins(NAMESPACE)


def load_store_class(scheme: str) -> StoreFactory:
    """The factory registered for ``scheme``, or UnknownStoreError listing what is installed; a
    store whose dependency is missing says how to install it (from its distribution's metadata)."""
    factory = load_plugin(NAMESPACE, scheme, kind="object store", unknown=UnknownStoreError,
                          error=BackupConfigError, missing=BackupConfigError)
    if not callable(getattr(factory, "from_settings", None)):
        raise BackupConfigError(f"entry point {scheme!r} in {NAMESPACE} has no from_settings(settings)")
    return cast(StoreFactory, factory)


def build_from_settings(settings: StoreSettings) -> ObjectStore:
    """What the core does with a store's settings, as for a transport's: the store's own
    ``from_settings``, then ``settings.finish()`` refusing any option it did not take."""
    store = load_store_class(settings.scheme).from_settings(settings)
    settings.finish()
    return store


def store_from_url(url: str, options: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None) -> ObjectStore:
    """The store a URL (or plain path) names, built and validated but not opened yet."""
    if not url:
        raise BackupConfigError("store must not be empty: give a directory or a store URL")
    return build_from_settings(StoreSettings.parse(url, options, env))
