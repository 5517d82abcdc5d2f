"""Compact JSON for the hot path.

``json.JSONEncoder.encode`` builds a new C encoder on every call; building it once
saves about a third of the cost of encoding a typical payload. Output is identical to
``json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_DEPTH", "dumps_compact", "encode_checked", "find_json_problem", "quote"]


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: A JSON string literal (quotes and escapes, non-ASCII kept), in C.
quote: Callable[[str], str] = json.encoder.encode_basestring

_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_FALLBACK = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Arguments: markers (circular-reference check), default, string encoder, indent,
# key separator, item separator, sort_keys, skipkeys, allow_nan.
_encode: Any = (_c_make_encoder({}, _refuse, quote, None, ":", ",", False, False, False)
                if _c_make_encoder is not None else None)


def dumps_compact(obj: Any) -> str:
    """Raises TypeError (unserialisable value) or ValueError (NaN, circular reference)."""
    if _encode is None:  # pragma: no cover - CPython always has the C accelerator
        return _FALLBACK.encode(obj)
    return "".join(_encode(obj, 0))


#: Deepest nesting of objects and arrays a notification may carry (the root object is 1).
MAX_DEPTH = 100


def encode_checked(value: Any, what: str) -> tuple[str, int]:
    """``value`` as compact JSON and its size in UTF-8 bytes, or ValueError naming what
    JSON cannot carry: an unserialisable type, NaN, a circular reference, a lone surrogate
    (in a key or a value), nesting deeper than :data:`MAX_DEPTH`.

    Fast path: the C encoder, a C scan for non-ASCII text, and — only when the text is
    long and has more brackets than the depth limit — a walk measuring the depth. The walk that names
    a problem runs only once something failed.
    """
    try:
        text = "".join(_encode(value, 0)) if _encode is not None else _FALLBACK.encode(value)
        size = len(text) if text.isascii() else len(text.encode())  # a lone surrogate fails here
    except (TypeError, ValueError, RecursionError):
        raise ValueError(find_json_problem(value, what) or f"{what} cannot be encoded as JSON") from None
    # Nesting deeper than MAX_DEPTH needs that many brackets, opened and closed.
    if len(text) > 2 * MAX_DEPTH + 1 and text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(value):
        raise ValueError(find_json_problem(value, what) or f"{what} is nested deeper than {MAX_DEPTH} levels")
    return text, size


def _too_deep(value: Any) -> bool:
    """Whether containers nest deeper than MAX_DEPTH (value is known to encode: no cycles)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def find_json_problem(value: Any, what: str) -> str | None:
    """The first thing in ``value`` the JSON encoder refuses or UTF-8 cannot carry, named by
    its path (``payload.volume.created is of type datetime``); None if there is none.
    An explicit stack, not recursion: a payload nested 100 000 deep is a clear error,
    not a RecursionError."""
    exit_marker = object()
    on_path: set[int] = set()  # containers being walked: meeting one again is a cycle
    stack: list[tuple[Any, Any, int]] = [(value, what, 1)]  # (value, path, depth); path built lazily
    while stack:
        item, path, depth = stack.pop()
        if item is exit_marker:  # done with a container: its id rides in the depth slot
            on_path.discard(depth)
            continue
        if isinstance(item, str):
            problem = _surrogate(item)
            if problem:
                return f"{_path(path)} {problem}"
            continue
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return f"{_path(path)} is {item!r}, which JSON cannot represent"
            continue
        if not isinstance(item, dict | list | tuple):
            return f"{_path(path)} is of type {type(item).__name__}"
        if depth > MAX_DEPTH:
            return f"{_path(path)} is nested deeper than {MAX_DEPTH} levels"
        if id(item) in on_path:
            return f"{_path(path)} is a circular reference (it contains itself)"
        on_path.add(id(item))
        stack.append((exit_marker, None, id(item)))
        children: list[tuple[Any, Any, int]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    problem = _surrogate(key)
                    if problem:
                        return f"{_path(path)} has a key that {problem}"
                elif not (key is None or isinstance(key, int | float)):
                    return f"{_path(path)} has a key of type {type(key).__name__} (keys must be strings)"
                elif isinstance(key, float) and (key != key or key in (float("inf"), float("-inf"))):
                    return f"{_path(path)} has the key {key!r}, which JSON cannot represent"
                children.append((child, (path, ".", key), depth + 1))
        else:
            children.extend((child, (path, "[]", index), depth + 1) for index, child in enumerate(item))
        stack.extend(reversed(children))  # depth-first, in document order
    return None


def _surrogate(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate {text[exc.start]!r} at index {exc.start}, which UTF-8 cannot encode"
    return None


def _path(path: Any) -> str:
    """Render a lazily built path ``(parent, kind, key)``, escaped (a key may hold a lone
    surrogate) and shortened when very long (a deeply nested payload)."""
    parts: list[str] = []
    while isinstance(path, tuple):
        path, kind, key = path
        parts.append(f"[{key}]" if kind == "[]" else f".{key}")
    parts.append(str(path))
    text = "".join(reversed(parts)).encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 200 else f"{text[:120]}…{text[-60:]}"
