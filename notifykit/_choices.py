"""Parsing configuration words into enums, with one error listing the allowed words."""

from __future__ import annotations

import enum
from typing import TypeVar

from ._errors import ConfigError

__all__ = ["parse_choice"]

E = TypeVar("E", bound=enum.StrEnum)


def parse_choice(cls: type[E], value: E | str, what: str) -> E:
    """``cls(value)`` case- and space-insensitively; ``ConfigError`` naming ``what`` otherwise."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        names = ", ".join(member.value for member in cls)
        raise ConfigError(f"unknown {what} {value!r}; expected one of {names}") from None
