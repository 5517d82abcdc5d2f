"""Dead letters: what could not be delivered, where it is kept, and the tools to read and rewrite it."""

from ._deadletter import (
    DeadLetter,
    DeadLetterSink,
    JsonlDeadLetterSink,
    MemoryDeadLetterSink,
    default_dead_letter_path,
    read_dead_letters,
    rewrite_dead_letters,
)

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "JsonlDeadLetterSink",
    "MemoryDeadLetterSink",
    "default_dead_letter_path",
    "read_dead_letters",
    "rewrite_dead_letters",
]
