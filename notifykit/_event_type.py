"""One event type of an AsyncAPI catalogue, and the component key of a name.

Kept below both the catalogue (``asyncapi.py``) and the envelopes its messages are written
in (``_asyncapi_envelopes.py``), so that neither imports the other for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._message import Priority

__all__ = ["EventType", "component_key"]

_KEY = re.compile(r"[^\w.\-]")


def component_key(name: str) -> str:
    """``name`` as an AsyncAPI component key: what the document's ``$ref`` pointers can name."""
    return _KEY.sub("_", name)


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type: its name, the priority it is sent with, and its payload's JSON Schema."""

    name: str
    payload: Mapping[str, Any]
    priority: Priority = Priority.INFO
    summary: str = ""
    description: str = ""

    @property
    def key(self) -> str:
        """The name as an AsyncAPI component key."""
        return component_key(self.name)
