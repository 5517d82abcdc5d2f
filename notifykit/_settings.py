"""What a transport is given to build itself: its URL and its own options, typed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._errors import ConfigError
from ._formats import WireFormat
from ._tls import TlsOptions
from ._url import ParsedURL

__all__ = ["TransportSettings"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(slots=True)
class TransportSettings:
    """A transport's URL, wire format, topics and its own options.

    Options come from URL query parameters or a TOML ``options`` table; a transport
    takes the ones it knows with the ``take_*`` helpers and calls :meth:`finish`,
    which rejects anything left over with an error naming it.
    """

    name: str
    url: ParsedURL
    format: WireFormat
    topics: tuple[str, ...] = ("notifications",)
    options: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name: str,
        url: ParsedURL,
        wire_format: WireFormat,
        topics: Sequence[str],
        options: Mapping[str, Sequence[str] | str],
    ) -> TransportSettings:
        opts = {k: [v] if isinstance(v, str) else list(v) for k, v in options.items()}
        return cls(name=name, url=url, format=wire_format, topics=tuple(topics), options=opts)

    def _where(self, key: str) -> str:
        return f"option {key!r} of transport {self.name!r} ({self.url.redacted})"

    def take_list(self, key: str, default: Sequence[str] = ()) -> list[str]:
        """Every value of ``key`` (repeated, or comma separated)."""
        values = self.options.pop(key, None)
        if values is None:
            return list(default)
        return [item.strip() for value in values for item in value.split(",") if item.strip()]

    def take_str(self, key: str, default: str | None = None) -> str | None:
        values = self.options.pop(key, None)
        return default if not values else values[-1]

    def take_int(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        text = self.take_str(key)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{self._where(key)} must be an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._where(key)} must be >= {minimum}, got {value}")
        return value

    def take_float(self, key: str, default: float | None = None, *, minimum: float | None = None) -> float | None:
        text = self.take_str(key)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{self._where(key)} must be a number, got {text!r}") from None
        if not math.isfinite(value):  # float() accepts "nan", "inf" and "1e999"
            raise ConfigError(f"{self._where(key)} must be a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._where(key)} must be >= {minimum}, got {value}")
        return value

    def take_bool(self, key: str, default: bool) -> bool:
        text = self.take_str(key)
        if text is None:
            return default
        lowered = text.strip().lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise ConfigError(f"{self._where(key)} must be true or false, got {text!r}")

    def take_choice(self, key: str, choices: Sequence[str], default: str) -> str:
        text = self.take_str(key, default)
        assert text is not None
        if text not in choices:
            raise ConfigError(f"{self._where(key)} must be one of {', '.join(choices)}, got {text!r}")
        return text

    def take_tls(self, *, enabled: bool) -> TlsOptions:
        """The shared TLS options (``ca_file``, ``cert_file``, ``key_file``, ``key_password``, ``verify``);
        ``enabled`` says whether the URL's scheme is a TLS one."""
        return TlsOptions.from_settings(self, enabled=enabled)

    def finish(self) -> None:
        """Reject options nobody took, so a typo is an error and not a silent default."""
        if self.options:
            unknown = ", ".join(sorted(self.options))
            raise ConfigError(f"unknown option(s) {unknown} for transport {self.name!r} ({self.url.redacted})")
