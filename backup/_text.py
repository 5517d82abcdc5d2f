"""Text that may come from outside as bytes (paths, names): shown safely, sent safely.

Paths and names are kept exactly as the OS gave them (``surrogateescape`` for bytes that are
not UTF-8); only where they leave the process are they made safe: one printable line for a
terminal or table, valid UTF-8 for a notification payload.
"""

from __future__ import annotations

__all__ = ["display_text", "utf8_text"]


def display_text(text: str) -> str:
    """One printable line: control characters escaped (``\\n``, ``\\x1b``), undecodable bytes
    shown as ``\\xff``; printable text, non-ASCII letters included, unchanged."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def utf8_text(text: str) -> str:
    """Valid UTF-8 text: each undecodable byte becomes U+FFFD, as a UTF-8 decoder shows it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
