"""Emit a few notifications through notifykit (default: JSON lines on stderr).

Usage: python examples/emit.py [URL]
"""

from __future__ import annotations

import sys

import anyio

from notifykit import Notifier


async def main(url: str) -> None:
    async with Notifier.from_url(url, publisher_id="example.host1") as notifier:
        ctx = {"request_id": "req-1", "project_id": "demo-project", "user_id": "demo-user"}
        await notifier.info(ctx, "backup.create.start", {"backup_id": "b-1", "size": 1})
        await notifier.info(ctx, "backup.createprogress", {"backup_id": "b-1", "percentage": 100})
        await notifier.info(ctx, "backup.create.end", {"backup_id": "b-1", "size": 1})
    for name, stats in notifier.stats().items():
        print(f"{name}: sent={stats.sent} dead_lettered={stats.dead_lettered}", file=sys.stderr)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "log://stderr")
