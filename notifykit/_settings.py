"""What a plugin is given to build itself: its URL and its own options, typed and checked.

One vocabulary for every kind of plugin — transports (:class:`TransportSettings`) and the
backup's object stores (``notifykit.backup.plugin.StoreSettings``) — so an option means the
same and fails with the same words everywhere: ``take_str/int/float/duration/bool/choice/
list/raw/secret/secrets`` check each value (finite, in range) and :meth:`PluginSettings.finish`, which
the core calls after the plugin's ``from_settings``, refuses whatever nobody took.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, overload

from ._errors import ConfigError
from ._formats import WireFormat
from ._tls import TlsOptions
from ._url import ParsedURL

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "PluginSettings", "TransportSettings"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


class PluginSettings:
    """The option parser every plugin kind shares; a kind subclasses it as a dataclass that
    has ``options`` (key → every value given, in order), ``taken``, ``reserved`` and ``secrets``.

    ``take_*`` removes a key from ``options`` and remembers it in ``taken`` (the allowed keys
    that ``finish()`` names). A key in ``reserved`` is one the core consumes itself (a
    transport's ``queue_size``, ``retry_*``, …): a plugin taking one is refused at load, so
    the two can never collide silently. Values of keys taken with ``take_secret`` never
    appear in an error.
    """

    __slots__ = ()

    #: What the errors raise: the core's ConfigError, the backup's BackupConfigError.
    error: ClassVar[type[Exception]] = ConfigError

    options: dict[str, list[str]]
    taken: set[str]
    reserved: frozenset[str]
    secrets: set[str]

    # -- wording, per kind --------------------------------------------------------------

    def _where(self, key: str) -> str:
        """How an error names the option, e.g. ``option 'x' of transport 'n' (url)``."""
        raise NotImplementedError

    def _unknown(self, unknown: Sequence[str]) -> str:
        """The message of ``finish()`` for options nobody took."""
        raise NotImplementedError

    def _fail(self, key: str, wanted: str, text: str | None = None) -> Exception:
        shown = "" if text is None or key in self.secrets else f", got {text!r}"
        return self.error(f"{self._where(key)} must be {wanted}{shown}")

    # -- the checks -----------------------------------------------------------------------

    def _take(self, key: str) -> list[str] | None:
        if key in self.reserved:
            raise self.error(f"{self._where(key)} is named like a core setting the plugin never receives;"
                             f" the plugin must call it something else")
        self.taken.add(key)
        return self.options.pop(key, None)

    def take_list(self, key: str, default: Sequence[str] = ()) -> list[str]:
        """Every value of ``key`` (repeated, or comma separated)."""
        values = self._take(key)
        if values is None:
            return list(default)
        return [item.strip() for value in values for item in value.split(",") if item.strip()]

    def take_raw(self, key: str) -> list[str]:
        """Every value of a repeatable option, unsplit (a header value may hold commas)."""
        return list(self._take(key) or [])

    def take_secrets(self, key: str) -> list[str]:
        """Like ``take_raw``, for repeatable secrets (signing keys during a rotation, header
        values carrying tokens): no error ever shows a value."""
        self.secrets.add(key)
        return self.take_raw(key)

    @overload
    def take_str(self, key: str, default: str) -> str: ...
    @overload
    def take_str(self, key: str, default: str | None = None) -> str | None: ...
    def take_str(self, key: str, default: str | None = None) -> str | None:
        """The last value given, as given (an empty string stays empty)."""
        values = self._take(key)
        return default if not values else values[-1]

    @overload
    def take_secret(self, key: str, default: str) -> str: ...
    @overload
    def take_secret(self, key: str, default: str | None = None) -> str | None: ...
    def take_secret(self, key: str, default: str | None = None) -> str | None:
        """Like ``take_str``, for a password or key: no error ever shows its value."""
        self.secrets.add(key)
        return self.take_str(key, default)

    @overload
    def take_int(self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int: ...
    @overload
    def take_int(self, key: str, default: None = None, *, minimum: int | None = None,
                 maximum: int | None = None) -> int | None: ...
    def take_int(self, key: str, default: int | None = None, *, minimum: int | None = None,
                 maximum: int | None = None) -> int | None:
        text = self.take_str(key)
        if text is None:
            return default
        try:
            value = int(text.strip())
        except ValueError:
            raise self._fail(key, "an integer", text) from None
        self._check_range(key, value, minimum, maximum, above=False)
        return value

    @overload
    def take_float(self, key: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
                   above: bool = False) -> float: ...
    @overload
    def take_float(self, key: str, default: None = None, *, minimum: float | None = None,
                   maximum: float | None = None, above: bool = False) -> float | None: ...
    def take_float(self, key: str, default: float | None = None, *, minimum: float | None = None,
                   maximum: float | None = None, above: bool = False) -> float | None:
        """A finite number (``nan``, ``inf`` and ``1e999`` are refused), ``>= minimum``
        (``> minimum`` when ``above``) and ``<= maximum``."""
        text = self.take_str(key)
        if text is None:
            return default
        try:
            value = float(text.strip())
        except ValueError:
            raise self._fail(key, "a number", text) from None
        if not math.isfinite(value):
            raise self._fail(key, "a finite number", text)
        self._check_range(key, value, minimum, maximum, above=above)
        return value

    @overload
    def take_duration(self, key: str, default: float, *, minimum: float = 0.0, maximum: float | None = None,
                      above: bool = False) -> float: ...
    @overload
    def take_duration(self, key: str, default: None = None, *, minimum: float = 0.0,
                      maximum: float | None = None, above: bool = False) -> float | None: ...
    def take_duration(self, key: str, default: float | None = None, *, minimum: float = 0.0,
                      maximum: float | None = None, above: bool = False) -> float | None:
        """Seconds: ``30``, ``2.5s``, ``250ms``, ``5m`` or ``1h``; finite and in range."""
        text = self.take_str(key)
        if text is None:
            return default
        match = _DURATION.match(text.strip().lower())
        value = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"] if match else math.nan
        if not math.isfinite(value):
            raise self._fail(key, "a duration in seconds (30, 2.5s, 250ms, 5m, 1h)", text)
        self._check_range(key, value, minimum, maximum, above=above)
        return value

    def _check_range(self, key: str, value: float, minimum: float | None, maximum: float | None, *,
                     above: bool) -> None:
        low_ok = minimum is None or (value > minimum if above else value >= minimum)
        if not low_ok or (maximum is not None and value > maximum):
            bounds = [] if minimum is None else [f"{'>' if above else '>='} {_show(minimum)}"]
            bounds += [] if maximum is None else [f"<= {_show(maximum)}"]
            shown = "(hidden)" if key in self.secrets else _show(value)
            raise self.error(f"{self._where(key)} must be {' and '.join(bounds)}, got {shown}")

    def take_bool(self, key: str, default: bool) -> bool:
        text = self.take_str(key)
        if text is None:
            return default
        lowered = text.strip().lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise self._fail(key, "true or false", text)

    def take_choice(self, key: str, choices: Sequence[str], default: str) -> str:
        text = self.take_str(key, default)
        assert text is not None
        if text not in choices:
            raise self._fail(key, f"one of {', '.join(choices)}", text)
        return text

    def finish(self) -> None:
        """Reject options nobody took, so a typo is an error and not a silent default.

        The core calls it right after the plugin's ``from_settings`` (a plugin need not);
        calling it again is harmless.
        """
        if self.options:
            raise self.error(self._unknown(sorted(self.options)))


@dataclass(slots=True)
class TransportSettings(PluginSettings):
    """A transport's URL, wire format, topics and its own options.

    Options come from URL query parameters or a TOML ``options`` table; a transport takes
    the ones it knows with the ``take_*`` helpers; the core then calls :meth:`finish`,
    which rejects anything left over with an error naming it.
    """

    name: str
    url: ParsedURL
    format: WireFormat
    topics: tuple[str, ...] = ("notifications",)
    options: dict[str, list[str]] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set, repr=False)
    reserved: frozenset[str] = field(default=frozenset(), repr=False)
    secrets: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def build(
        cls,
        name: str,
        url: ParsedURL,
        wire_format: WireFormat,
        topics: Sequence[str],
        options: Mapping[str, Sequence[str] | str],
        *,
        reserved: frozenset[str] = frozenset(),
    ) -> TransportSettings:
        opts = {k: [v] if isinstance(v, str) else list(v) for k, v in options.items()}
        return cls(name=name, url=url, format=wire_format, topics=tuple(topics), options=opts, reserved=reserved)

    def where(self, key: str | None = None) -> str:
        """How an error names this transport, ``transport 'n' (url)``, or one of its options,
        ``option 'k' of transport 'n' (url)``: the URL redacted, so the same words everywhere."""
        here = f"transport {self.name!r} ({self.url.redacted})"
        return here if key is None else f"option {key!r} of {here}"

    def _where(self, key: str) -> str:
        return self.where(key)

    def _unknown(self, unknown: Sequence[str]) -> str:
        return f"unknown option(s) {', '.join(unknown)} for transport {self.name!r} ({self.url.redacted})"

    def take_tls(self, *, enabled: bool) -> TlsOptions:
        """The shared TLS options (``ca_file``, ``cert_file``, ``key_file``, ``key_password``, ``verify``);
        ``enabled`` says whether the URL's scheme is a TLS one."""
        return TlsOptions.from_settings(self, enabled=enabled)
