"""Range checks for every numeric option, whichever way it arrived (URL, TOML, keyword).

One function, so NaN, infinity, a negative or a meaningless zero is always the same
``ConfigError`` naming the option and the allowed range, at configuration time rather
than as a raw ``ValueError`` from deep inside anyio or ``random`` much later.
"""

from __future__ import annotations

import math
from typing import TypeVar

from ._errors import ConfigError

__all__ = ["check_number"]

N = TypeVar("N", int, float)


def check_number(name: str, value: N, *, kind: type[int] | type[float] = float, minimum: float = 0.0,
                 above: bool = False, where: str | None = None) -> N:
    """``value`` if it is a finite ``kind`` >= ``minimum`` (> when ``above``); else a
    ConfigError such as ``close_timeout must be a finite number >= 0, got nan``."""
    wanted = "an integer" if kind is int else "a finite number"
    allowed = f"{wanted} {'>' if above else '>='} {_show(minimum)}"
    prefix = f"{where}: " if where else ""
    ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if ok and (value <= minimum if above else value < minimum):
        ok = False
    if not ok:
        raise ConfigError(f"{prefix}{name} must be {allowed}, got {value!r}")
    return value


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)
