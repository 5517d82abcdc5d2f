"""Object stores by URL: the ``notifykit.backup.stores`` entry points, like the core's transports.

The URL's scheme names the store (a plain path means ``file``, the posix store); the
store class parses and validates its own options from a ``StoreSettings``. Installing a
distribution that declares an entry point in this group is all it takes to add a store:

    [project.entry-points."notifykit.backup.stores"]
    mystore = "my_package:MyObjectStore"      # a class with from_settings(settings)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from notifykit import redact_url

from ._errors import BackupConfigError, UnknownStoreError
from ._objectstore import ObjectStore

__all__ = ["NAMESPACE", "StoreFactory", "StoreSettings", "installed_stores", "load_store_class", "store_from_url"]

NAMESPACE = "notifykit.backup.stores"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StoreFactory(Protocol):
    """What an entry point in ``notifykit.backup.stores`` names: usually the store class."""

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> ObjectStore:
        """The store for ``settings`` (no I/O yet: ``open()`` connects); options it does not
        take make ``settings.finish()`` raise."""
        ...


@dataclass(slots=True)
class StoreSettings:
    """A store URL taken apart, with its options (the URL query, then the TOML
    ``store_options`` table over it). Secrets (``password``, options) stay out of the repr."""

    scheme: str
    host: str | None
    port: int | None
    path: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    taken: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def parse(cls, url: str, options: Mapping[str, Any] | None = None,
              env: Mapping[str, str] | None = None) -> StoreSettings:
        """``SCHEME://[USER[:SECRET]@]HOST[:PORT][/PATH][?k=v&…]``, or a plain path (``file``)."""
        env = os.environ if env is None else env
        if "://" not in url:
            settings = cls("file", None, None, url, env=env)
        else:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                raise BackupConfigError(f"store URL is not a valid URL ({redact_url(url)})") from None
            settings = cls(parts.scheme.lower(), parts.hostname, port, unquote(parts.path),
                           unquote(parts.username) if parts.username is not None else None,
                           unquote(parts.password) if parts.password is not None else None, env=env)
            for key, value in parse_qsl(parts.query, keep_blank_values=True):
                settings.options[key] = value
        for key, value in (options or {}).items():
            if value is not None:
                settings.options[str(key)] = value if isinstance(value, str) else _toml_text(key, value)
        return settings

    @property
    def netloc(self) -> str:
        """``host[:port]`` without credentials."""
        if not self.host:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    @property
    def location(self) -> str:
        """The URL without credentials or options: safe to print and to record."""
        if self.scheme == "file" and not self.host:
            return self.path
        return f"{self.scheme}://{self.netloc}{self.path}"

    # -- typed option access (every key asked for counts as allowed) ----------------------

    def take_str(self, key: str, default: str | None = None) -> str | None:
        self.taken.add(key)
        value = self.options.get(key)
        return default if value is None or value == "" else value

    def take_int(self, key: str, default: int) -> int:
        raw = self.take_str(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise BackupConfigError(f"{self.scheme} store: {key} must be an integer, got {raw!r}") from None

    def take_float(self, key: str, default: float) -> float:
        raw = self.take_str(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise BackupConfigError(f"{self.scheme} store: {key} must be a number, got {raw!r}") from None

    def take_bool(self, key: str, default: bool) -> bool:
        raw = self.take_str(key)
        if raw is None:
            return default
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise BackupConfigError(f"{self.scheme} store: {key} must be true or false, got {raw!r}")

    def finish(self) -> None:
        """One clear error for options no ``take_*`` asked for, naming the allowed ones."""
        unknown = sorted(set(self.options) - self.taken)
        if unknown:
            raise BackupConfigError(
                f"{self.scheme} store: unknown option(s) {', '.join(map(repr, unknown))}"
                f" (allowed: {', '.join(sorted(self.taken)) or 'none'})")


def _toml_text(key: object, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise BackupConfigError(f"store_options.{key} must be a string, number or boolean, got {value!r}")


def installed_stores() -> list[str]:
    """Every registered store scheme, whether or not its dependencies import."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def load_store_class(scheme: str) -> StoreFactory:
    """The factory registered for ``scheme``, or UnknownStoreError listing what is installed."""
    matches = [ep for ep in entry_points(group=NAMESPACE) if ep.name == scheme]
    if not matches:
        raise UnknownStoreError(scheme, installed_stores())
    try:
        factory = matches[0].load()
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise BackupConfigError(f"object store {scheme!r} is installed but cannot import {missing!r}"
                                f" (pip install 'notifykit[backup]')") from None
    if not callable(getattr(factory, "from_settings", None)):
        raise BackupConfigError(f"entry point {scheme!r} in {NAMESPACE} has no from_settings(settings)")
    return cast(StoreFactory, factory)


def store_from_url(url: str, options: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None) -> ObjectStore:
    """The store a URL (or plain path) names, built and validated but not opened yet."""
    if not url:
        raise BackupConfigError("store must not be empty: give a directory or a store URL")
    settings = StoreSettings.parse(url, options, env)
    return load_store_class(settings.scheme).from_settings(settings)
