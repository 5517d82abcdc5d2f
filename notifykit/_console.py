"""What the two command lines (``notifykit``, ``notifykit-backup``) print, shared.

Log records are held so that one repeating the command's own error line is not printed
twice, and module docstrings become plain ``--help`` text. A private module: the CLIs
import it, nothing else does (nothing imports a CLI).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

__all__ = ["LogLines", "own_log_lines", "plain_help"]


class LogLines(logging.StreamHandler):  # type: ignore[type-arg]
    """notifykit's log records on stderr. Warnings show at once; error records are held until
    the command ends or another record shows, so one that repeats the error the command fails
    with (a transport logs a refused login, then raises it) is not printed twice: the
    ``notifykit: error:`` line says it once."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.held.append(record)
            return
        self.show_held()
        super().emit(record)

    def show_held(self, failure: str | None = None, *, drop: bool = False) -> None:
        """Print the held records, but those that only repeat ``failure`` (all of them with
        ``drop``: the command's last line already says what happened)."""
        held, self.held = self.held, []
        for record in held:
            if not drop and (not failure or failure not in record.getMessage()):
                super().emit(record)


@contextlib.contextmanager
def own_log_lines(names: Sequence[str] = ("notifykit",)) -> Iterator[LogLines | None]:
    """Show the warnings of the loggers ``names`` (and their children) on stderr, not the
    client libraries' (a refused connection is already our one error line). Only when
    nobody configured logging (a test, an app)."""
    root = logging.getLogger()
    if root.handlers:
        yield None
        return
    handler = LogLines()
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: any(record.name == n or record.name.startswith(n + ".") for n in names))
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.show_held()


def plain_help(doc: str | None, paragraph: int = 0) -> str | None:
    """One paragraph of a module docstring as plain text for ``--help``: reST's literal
    marks (````x````) removed, lines joined (argparse wraps them again)."""
    paragraphs = (doc or "").strip().split("\n\n")
    if paragraph >= len(paragraphs) or not paragraphs[paragraph]:
        return None
    return " ".join(line.strip() for line in paragraphs[paragraph].splitlines()).replace("``", "")
