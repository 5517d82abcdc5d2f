"""BackupConfig: every setting of the backup service and CLI, from defaults, a TOML file,
environment variables and explicit options (later sources win, in that order).

TOML keys sit in a ``[backup]`` table (or all at the top level, in a file without one); a key
this module does not know, anywhere in the file, is an error naming the file and the key. Each
key ``name`` can also be set with the environment variable ``NOTIFYKIT_BACKUP_<NAME>``. The object store is a URL
(``store``) whose scheme picks the store class by entry point; the store validates its own
options, so this module knows no store's settings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifykit import redact_url

from ._block_hash import DEFAULT_BLOCK_HASH, check_block_hash
from ._chunked import DEFAULT_CHUNK_SIZE, check_pipeline
from ._compression import COMPRESSIONS, check_level
from ._errors import BackupConfigError
from ._progress import ProgressPolicy
from ._stores import store_from_url

__all__ = ["ENV_PREFIX", "BackupConfig", "parse_size"]

ENV_PREFIX = "NOTIFYKIT_BACKUP_"
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object, key: str = "size") -> int:
    """Bytes from ``4194304``, ``"4MiB"``, ``"4M"`` (binary) or ``"4MB"`` (decimal)."""
    if isinstance(value, bool):
        raise BackupConfigError(f"{key} must be a size such as 4MiB, got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise BackupConfigError(f"{key} must be a size such as 4194304, 4MiB or 512M, got {value!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "notifykit" / "backup"


_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
CATALOG_SCHEMES = ("postgresql", "postgres")


def check_catalog_url(url: str) -> str:
    """``url`` if it names a catalog backend this code has; else one clear error (a path is SQLite)."""
    match = _URL_SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in CATALOG_SCHEMES:
        shown = f"{scheme}://…" if scheme else "(no scheme)"
        raise BackupConfigError(
            f"catalog {shown}: unsupported kind of catalog; give a file path (SQLite) or a postgresql:// URL")
    return url


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """Settings with their defaults; see docs/backup.md for each one."""

    catalog_path: Path = field(default_factory=lambda: _state_dir() / "catalog.sqlite3")
    # A directory, or a store URL (file://, swift://, s3://, …) that may hold credentials.
    store: str = field(default_factory=lambda: str(_state_dir() / "objects"))
    # Options for the store over the URL's query (the TOML [backup.store_options] table).
    store_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    # A postgresql:// URL (catalog_path = "postgresql://…" sets it): the catalog several hosts share.
    catalog_url: str | None = field(default=None, repr=False)
    uploads: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    compression: str = "zstd"
    compression_level: int | None = None
    # The block list's hash of new full backups (increments keep their parent's): blake3 or sha256.
    block_hash: str = DEFAULT_BLOCK_HASH
    workers: int | None = None
    host: str = field(default_factory=socket.gethostname)
    availability_zone: str = "nova"
    project_id: str = "default"
    user_id: str = "default"
    notifier_url: str = "log://stderr"
    notifier_config: Path | None = None
    dead_letter_path: Path | None = None
    backup_object_number_per_notification: int = 10
    backup_timer_interval: float = 120.0
    backup_enable_progress_timer: bool = True

    def __repr__(self) -> str:
        """Every field but the keys, and the URLs redacted (user:password@, ``secret=`` and other secret-looking options)."""
        shown = []
        for item in dataclasses.fields(self):
            if not item.repr:
                continue
            value = getattr(self, item.name)
            is_url = item.name.endswith("_url") or item.name == "store"
            text = repr(redact_url(value)) if is_url and isinstance(value, str) else repr(value)
            shown.append(f"{item.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __post_init__(self) -> None:
        check_pipeline(self.chunk_size, self.workers, self.uploads)
        if self.compression not in COMPRESSIONS:
            raise BackupConfigError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        check_level(self.compression, self.compression_level)
        object.__setattr__(self, "block_hash", check_block_hash(self.block_hash))
        for key in ("host", "availability_zone", "project_id", "user_id"):
            value = getattr(self, key)
            if not value or not value.isprintable() or value != value.strip():
                raise BackupConfigError(f"{key} must be a non-empty printable name without surrounding spaces,"
                                        f" got {value!r}")
        if self.catalog_url is not None:
            check_catalog_url(self.catalog_url)
        if not isinstance(self.store, str):  # a Path from library callers
            object.__setattr__(self, "store", os.fspath(self.store))
        store_from_url(self.store, self.store_options)  # validates the store URL and its options
        self.progress_policy()  # validates the progress options

    @property
    def publisher_id(self) -> str:
        return f"backup.{self.host}"

    @property
    def store_location(self) -> str:
        """``store`` with its credentials and secret-looking options redacted, for messages."""
        return redact_url(self.store)


    def progress_policy(self) -> ProgressPolicy:
        return ProgressPolicy(self.backup_object_number_per_notification, self.backup_timer_interval,
                              self.backup_enable_progress_timer)

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, toml_path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
             **overrides: Any) -> BackupConfig:
        """Defaults ← TOML file ← ``NOTIFYKIT_BACKUP_*`` variables ← ``overrides`` (None = unset).

        A bad value is one BackupConfigError naming its key, and the file when it came from one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        from_file: set[str] = set()
        path = toml_path or env.get(f"{ENV_PREFIX}CONFIG")
        if path:
            values.update(cls._from_toml(Path(path)))
            from_file = set(values)
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = raw
                from_file.discard(f.name)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise BackupConfigError(f"unknown backup setting(s): {', '.join(sorted(unknown))}")
        explicit = {k: v for k, v in overrides.items() if v is not None}
        values.update(explicit)
        from_file -= set(explicit)
        if overrides.get("catalog_path") is not None:  # an explicit --catalog decides the kind of catalog
            values.pop("catalog_url", None)
        catalog = values.get("catalog_path")
        if isinstance(catalog, str) and _URL_SCHEME.match(catalog):  # catalog_path = "postgresql://…"
            values["catalog_url"] = check_catalog_url(values.pop("catalog_path"))
        coerced = {k: cls._coerce(k, v) for k, v in values.items()}
        try:
            return cls(**coerced)
        except BackupConfigError as exc:
            blamed = _blamed_keys(str(exc)) & from_file
            if path and blamed:
                raise BackupConfigError(f"{str(path)!r}: {exc}") from None
            raise

    @classmethod
    def _from_toml(cls, path: Path) -> dict[str, Any]:
        """The file's settings, every value checked: an unknown key anywhere (top level, beside
        ``[backup]``, or a table of its own) or a malformed value is one error naming the file
        and the key; nothing of a half-understood file is used."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise BackupConfigError(f"backup config file {str(path)!r} does not exist") from None
        except UnicodeDecodeError as exc:
            raise BackupConfigError(f"backup config file {str(path)!r} is not UTF-8 text"
                                    f" (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BackupConfigError(f"backup config file {str(path)!r} is not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if "backup" in data:
            table = data["backup"]
            if not isinstance(table, dict):
                raise BackupConfigError(f"{str(path)!r}: [backup] must be a table")
            outside = sorted(f"[{k}]" if isinstance(data[k], dict) else k for k in set(data) - {"backup"})
            if outside:
                raise BackupConfigError(
                    f"{str(path)!r}: unknown key(s) outside the [backup] table: {', '.join(outside)}"
                    " (with a [backup] table, every setting goes inside it)")
            where = "backup."
        else:
            table, where = data, ""
        unknown = sorted(set(table) - known)
        if unknown:
            shown = ", ".join(f"[{where}{key}]" if isinstance(table[key], dict) else where + key for key in unknown)
            raise BackupConfigError(f"{str(path)!r}: unknown backup setting(s): {shown}")
        checked: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, dict) and key != "store_options":
                raise BackupConfigError(f"{str(path)!r}: {where}{key} must be a value, not a table")
            try:
                cls._coerce(key, value)  # checked here to name the file; coerced in load()
            except BackupConfigError as exc:
                raise BackupConfigError(f"{str(path)!r}: {exc}") from None
            checked[key] = value
        options = checked.get("store_options", {})
        nested = sorted(k for k, v in options.items() if isinstance(v, dict | list))
        if nested:
            raise BackupConfigError(f"{str(path)!r}: {where}store_options.{nested[0]} must be a value, not a"
                                    " table or array")
        return checked

    @staticmethod
    def _coerce(key: str, value: Any) -> Any:
        """Strings from the environment or TOML values into each field's type."""
        if key == "chunk_size":
            return parse_size(value, key)
        if key in ("catalog_path", "notifier_config", "dead_letter_path"):
            return Path(os.path.expanduser(str(value)))
        if key == "store_options":
            if not isinstance(value, Mapping):
                raise BackupConfigError("store_options must be a table of option = value (TOML [backup.store_options])")
            return dict(value)
        if key == "store":
            return os.path.expanduser(str(value)) if "://" not in str(value) else str(value)
        if key == "backup_enable_progress_timer":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise BackupConfigError(f"{key} must be true or false, got {value!r}")
        if key in ("compression_level", "workers", "uploads", "backup_object_number_per_notification"):
            try:
                if isinstance(value, bool):
                    raise ValueError
                return int(value)
            except (TypeError, ValueError):
                raise BackupConfigError(f"{key} must be an integer, got {value!r}") from None
        if key == "backup_timer_interval":
            try:
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
            except (TypeError, ValueError):
                raise BackupConfigError(f"{key} must be a number of seconds, got {value!r}") from None
        if key in ("compression", "block_hash"):
            return str(value).lower()
        return str(value)


_WORD = re.compile(r"[a-z_]+")


def _blamed_keys(message: str) -> set[str]:
    """The settings an error message is about: the keys it names, and the store's keys for
    an error of a store (its messages name the store's kind, e.g. ``file store: …``)."""
    words = set(_WORD.findall(message))
    blamed = words & {f.name for f in dataclasses.fields(BackupConfig)}
    if "store" in words or "option" in words or "options" in words:
        blamed |= {"store", "store_options"}
    return blamed
