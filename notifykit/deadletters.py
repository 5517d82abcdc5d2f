"""Dead letters: what could not be delivered, where it is kept, and the tools to read and rewrite it."""

from ._deadletter import (
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DeadLetter,
    DeadLetterSink,
    DeadLetterWriteError,
    JsonlDeadLetterSink,
    MemoryDeadLetterSink,
    default_dead_letter_path,
    read_dead_letters,
    rewrite_dead_letters,
)

__all__ = [
    "DEFAULT_DEAD_LETTER_MAX_BYTES",
    "DeadLetter",
    "DeadLetterSink",
    "DeadLetterWriteError",
    "JsonlDeadLetterSink",
    "MemoryDeadLetterSink",
    "default_dead_letter_path",
    "read_dead_letters",
    "rewrite_dead_letters",
]
