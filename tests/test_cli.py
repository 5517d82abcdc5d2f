"""The ``notifykit`` CLI: clear errors, and tail's output forms."""

from __future__ import annotations

import pytest

from notifykit.cli import _one_line, main


def test_tail_of_untailable_transport_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "memory://"]) == 2
    assert "transport 'memory' cannot be tailed" in capsys.readouterr().err


def test_tail_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "nope://x"]) == 2
    assert "unknown transport scheme 'nope'" in capsys.readouterr().err


def test_one_line_form() -> None:
    line = _one_line({"timestamp": "t", "priority": "info", "event_type": "backup.create.end",
                      "publisher_id": "backup.h", "payload": {"size": 1}})
    assert line == 't INFO     backup.create.end [backup.h] {"size":1}'
