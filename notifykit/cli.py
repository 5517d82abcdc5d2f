"""``notifykit`` command line: operator tools that work with any installed transport.

``notifykit tail URL`` prints notifications as they arrive on a broker. The CLI finds
the transport by URL scheme like the Notifier does, so it imports no backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, TextIO

import anyio

from ._config import TransportConfig
from ._errors import NotifyKitError
from ._formats import decode_message
from ._loading import load_transport_class
from ._settings import TransportSettings
from ._url import parse_url

__all__ = ["main"]


def _one_line(message: dict[str, Any]) -> str:
    payload = json.dumps(message.get("payload"), ensure_ascii=False, separators=(",", ":"))
    if len(payload) > 160:
        payload = payload[:157] + "..."
    return (f"{message.get('timestamp')} {str(message.get('priority', '')).upper():8} "
            f"{message.get('event_type')} [{message.get('publisher_id')}] {payload}")


def _settings_for(url: str) -> TransportSettings:
    config = TransportConfig.from_url(url)
    parsed = parse_url(config.url)
    cls = load_transport_class(parsed.scheme)
    options: dict[str, list[str]] = {}
    for key, value in parsed.query:
        options.setdefault(key, []).append(value)
    return TransportSettings.build("tail", parsed, config.format or cls.default_format, config.topics, options)


async def tail(url: str, event_glob: str, as_json: bool, out: TextIO, limit: int | None = None) -> int:
    """Print each decoded notification matching ``event_glob``; returns how many were printed."""
    settings = _settings_for(url)
    cls = load_transport_class(settings.url.scheme)
    printed = 0
    bodies = cls.tail(settings)
    try:
        async for body in bodies:
            try:
                message = decode_message(body)
            except ValueError as exc:
                print(f"# undecodable message ({exc}): {body[:200]!r}", file=sys.stderr)
                continue
            if not fnmatchcase(str(message.get("event_type")), event_glob):
                continue
            out.write((json.dumps(message, ensure_ascii=False) if as_json else _one_line(message)) + "\n")
            out.flush()
            printed += 1
            if limit is not None and printed >= limit:
                break
    finally:
        # Leaving the loop early (--limit) must close the transport's subscription now,
        # not whenever the abandoned generator is finalised (which may never finish it).
        aclose = getattr(bodies, "aclose", None)
        if aclose is not None:
            await aclose()
    return printed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notifykit", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tail", help="print notifications arriving on a broker URL")
    t.add_argument("url", help="e.g. amqp://guest:guest@127.0.0.1:5672/ or kafka://127.0.0.1:9092/")
    t.add_argument("--event-type", default="*", help="glob of event types to show (default: all)")
    t.add_argument("--json", dest="as_json", action="store_true", default=None,
                   help="JSON lines (the default when stdout is not a terminal)")
    t.add_argument("--lines", dest="as_json", action="store_false", help="one readable line per event")
    t.add_argument("--limit", type=int, default=None, help="stop after N notifications")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "tail":
            as_json = (not sys.stdout.isatty()) if args.as_json is None else args.as_json
            anyio.run(tail, args.url, args.event_type, as_json, sys.stdout, args.limit)
    except NotifyKitError as exc:
        print(f"notifykit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

