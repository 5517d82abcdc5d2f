"""Where notifykit keeps its local state unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["state_file"]


def state_file(env_var: str, name: str) -> Path:
    """``$env_var`` when set, else ``$XDG_STATE_HOME/notifykit/<name>`` (``~/.local/state`` by default)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "notifykit" / name
