"""Keyword overrides go through the same checks as URLs and TOML (issue 23, reproduction 5)."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import anyio
import pytest

from notifykit import ConfigError, Notifier, OverflowPolicy, QueueFullError, RetryPolicy, TransportConfig


def test_a_policy_given_as_a_string_is_parsed_and_block_stays_block(tmp_path: Path) -> None:
    notifier = Notifier.from_url("memory://?queue_size=1", publisher_id="p.h", dead_letters=tmp_path / "dl",
                                 overflow="block", block_timeout=0.05)
    assert notifier.config.transports[0].overflow is OverflowPolicy.BLOCK

    async def main() -> None:
        async with notifier:
            transport = notifier.transports["memory"]
            transport.stall()  # type: ignore[attr-defined]
            for i in range(5):  # block: each waits for room (or QueueFullError), none is silently dropped
                with suppress(QueueFullError):
                    await notifier.info({}, "a.b", {"i": i})
            transport.resume()  # type: ignore[attr-defined]

    anyio.run(main)
    assert notifier.stats()["memory"].dropped == 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"overflow": "blok"}, "unknown overflow policy 'blok'"),
    ({"format": "xml"}, "format: unknown format 'xml'"),
    ({"queue_size": "5"}, "queue_size must be an integer"),
    ({"retry": {"max_attempts": 1}}, "retry must be a RetryPolicy"),
    ({"durable": "yes"}, "durable must be true or false"),
    ({"spool_max_bytes": 1 << 20}, "'spool_max_bytes' is a Notifier-wide setting"),
    ({"colour": "red"}, "unknown keyword 'colour' for a transport"),
])
def test_a_bad_override_is_one_config_error_naming_it(tmp_path: Path, overrides: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Notifier.from_url("memory://", publisher_id="p.h", dead_letters=tmp_path / "dl", **overrides)


def test_replace_on_a_config_is_checked_too() -> None:
    from dataclasses import replace

    config = TransportConfig.from_url("memory://")
    assert replace(config, overflow="drop_oldest").overflow is OverflowPolicy.DROP_OLDEST  # type: ignore[arg-type]
    assert replace(config, retry=RetryPolicy(max_attempts=2)).retry.max_attempts == 2
    with pytest.raises(ConfigError, match="overflow"):
        replace(config, overflow=3)  # type: ignore[arg-type]
