"""``notifykit`` command line: operator tools that work with any installed transport.

``notifykit tail URL`` prints notifications as they arrive on a broker;
``notifykit deadletters list|replay|purge`` inspects and re-drives dead letters;
``notifykit status`` shows a running (or dead) process's counters and its spool.
The CLI finds transports by URL scheme like the Notifier does, so it imports no backend.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread

from ._config import NotifierConfig, TransportConfig
from ._deadletter import MemoryDeadLetterSink, default_dead_letter_path, read_dead_letters, rewrite_dead_letters
from ._errors import ConfigError, NotifyKitError
from ._formats import decode_message
from ._loading import resolve_transport
from ._message import Notification
from ._notifier import Notifier
from ._redact import redact_text
from ._spool import Spool, default_spool_path
from ._stats import render_prometheus
from ._status import read_status_file
from ._transport import Tailable

__all__ = ["main"]


def _one_line(message: dict[str, Any]) -> str:
    payload = json.dumps(message.get("payload"), ensure_ascii=False, separators=(",", ":"))
    if len(payload) > 160:
        payload = payload[:157] + "..."
    return (f"{message.get('timestamp')} {str(message.get('priority', '')).upper():8} "
            f"{message.get('event_type')} [{message.get('publisher_id')}] {payload}")


async def tail(url: str, event_glob: str, as_json: bool, out: TextIO, limit: int | None = None) -> int:
    """Print each decoded notification matching ``event_glob``; returns how many were printed."""
    cls, settings = resolve_transport("tail", TransportConfig.from_url(url))
    if not isinstance(cls, Tailable):
        raise ConfigError(f"transport {settings.url.scheme!r} cannot be tailed")
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


def _record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (str(record.get("transport")), str(record.get("message", {}).get("message_id")), str(record.get("failed_at")))


def _selected(record: dict[str, Any], transport: str | None) -> bool:
    return transport is None or record.get("transport") == transport


def deadletters_list(path: Path, transport: str | None, as_json: bool, out: TextIO) -> int:
    count = 0
    if path.exists():
        for record in read_dead_letters(path):
            if not _selected(record, transport):
                continue
            count += 1
            message = record.get("message", {})
            out.write(json.dumps(record, ensure_ascii=False) + "\n" if as_json else
                      f"{record.get('failed_at')} {record.get('transport')} {message.get('event_type')} "
                      f"{message.get('message_id')} {record.get('reason')}\n")
    print(f"# {count} dead letter(s) in {path}", file=sys.stderr)
    return count


def _replay_config(args: argparse.Namespace) -> NotifierConfig:
    if args.url:
        config = TransportConfig.from_url(args.url)
        return NotifierConfig(transports=(replace(config, name=config.name or args.transport),))
    return NotifierConfig.from_toml(args.config)


async def _cancel_on_signals(scope: anyio.CancelScope) -> None:
    """SIGTERM/SIGINT: stop sending; the Notifier then drains within close_timeout.
    (Only the main thread can receive signals; elsewhere, e.g. called from a test, no-op.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            print(f"notifykit: {signal.Signals(signum).name}: draining, then stopping", file=sys.stderr)
            scope.cancel()
            return


def load_dead_letters(path: Path, transport: str | None) -> list[dict[str, Any]]:
    return [r for r in read_dead_letters(path) if _selected(r, transport)] if path.exists() else []


async def deadletters_replay(path: Path, records: list[dict[str, Any]], config: NotifierConfig,
                             out: TextIO) -> tuple[int, int]:
    """Re-send dead letters (same message_id) to the transport of the same name (or the
    only one configured); remove them from the file unless they fail again."""
    names = [t.name or "(unnamed)" for t in config.transports]
    sink = MemoryDeadLetterSink()
    sent_keys: set[tuple[str, str, str]] = set()
    for target in config.transports:
        batch = [r for r in records if r.get("transport") == target.name or len(config.transports) == 1]
        if not batch:
            continue
        notifier = Notifier(replace(config, transports=(target,)), dead_letters=sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signals, tg.cancel_scope)
            async with notifier:
                for record in batch:
                    await notifier.emit(Notification.from_json(json.dumps(record["message"])))
                    sent_keys.add(_record_key(record))
            tg.cancel_scope.cancel()
    failed_again = {(letter.notification.message_id) for letter in sink.letters}
    removed = await anyio.to_thread.run_sync(
        lambda: rewrite_dead_letters(path, lambda r: _record_key(r) in sent_keys, sink.letters))
    unmatched = [r for r in records if _record_key(r) not in sent_keys]
    if unmatched:
        print(f"# {len(unmatched)} dead letter(s) name a transport not in the configuration ({', '.join(names)})",
              file=sys.stderr)
    out.write(f"replayed {removed}: {removed - len(failed_again)} delivered, {len(failed_again)} dead-lettered again\n")
    return removed, len(failed_again)


def deadletters_purge(path: Path, transport: str | None, yes: bool, out: TextIO) -> int:
    matching = sum(1 for r in read_dead_letters(path) if _selected(r, transport)) if path.exists() else 0
    if not yes:
        out.write(f"{matching} dead letter(s) would be purged from {path}; add --yes to purge\n")
        return matching
    removed = rewrite_dead_letters(path, lambda r: _selected(r, transport)) if path.exists() else 0
    out.write(f"purged {removed} dead letter(s) from {path}\n")
    return removed


def status(status_file: Path | None, spool_file: Path | None, prometheus: bool, out: TextIO) -> None:
    if status_file is None and spool_file is None:
        raise ConfigError("status needs --file STATUS_JSON (a Notifier's status_path) and/or --spool SPOOL")
    if status_file is not None:
        try:
            document = read_status_file(status_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read status file {str(status_file)!r}: {exc}") from None
        transports = document.get("transports", {})
        if prometheus:
            out.write(render_prometheus(transports))
        else:
            age = datetime.now(UTC).timestamp() - float(document.get("updated_at", 0))
            out.write(f"pid {document.get('pid')} publisher {document.get('publisher_id')}"
                      f" {'closed' if document.get('closed') else 'running'}, updated {age:.0f}s ago\n")
            for name, row in transports.items():
                out.write(f"  {name}: {row['state']} enqueued={row['enqueued']} sent={row['sent']}"
                          f" retried={row['retried']} dropped={row['dropped']} dead_lettered={row['dead_lettered']}"
                          f" queue={row['queue_depth']} spooled={row['spooled']}"
                          + (f" last_error={row['last_error']!r}" if row.get("last_error") else "") + "\n")
            for name, task in document.get("tasks", {}).items():  # background tasks that failed
                if task.get("failures"):
                    out.write(f"  task {name}: {task.get('state')} failures={task.get('failures')}"
                              f" last_error={task.get('last_error')!r}\n")
    if spool_file is not None:
        if not spool_file.exists():
            raise ConfigError(f"no spool at {str(spool_file)!r}")
        spool = Spool(spool_file)
        try:
            counts = spool.counts_blocking()
        finally:
            spool._close()
        out.write(f"spool {spool_file}: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "empty")
                  + "\n")


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

    d = sub.add_parser("deadletters", help="list, re-drive or purge dead letters")
    dsub = d.add_subparsers(dest="action", required=True)
    for action, text in (("list", "print dead letters"), ("replay", "re-send dead letters"),
                         ("purge", "delete dead letters")):
        a = dsub.add_parser(action, help=text)
        a.add_argument("--file", type=Path, default=None,
                       help=f"dead-letter file (default: {default_dead_letter_path()})")
        a.add_argument("--transport", default=None, help="only the dead letters of this transport name")
        if action == "list":
            a.add_argument("--json", dest="as_json", action="store_true", help="raw JSON lines")
        if action == "replay":
            target = a.add_mutually_exclusive_group(required=True)
            target.add_argument("--url", help="send to this transport URL")
            target.add_argument("--config", type=Path, help="TOML configuration; letters go to the transport of the same name")
        if action == "purge":
            a.add_argument("--yes", action="store_true", help="really delete (otherwise only count)")

    st = sub.add_parser("status", help="counters and state of a Notifier (its status_path file) and its spool")
    st.add_argument("--file", type=Path, default=None, help="status JSON written by a Notifier (status_path)")
    st.add_argument("--spool", type=Path, default=None, help=f"spool file (e.g. {default_spool_path()})")
    st.add_argument("--prometheus", action="store_true", help="Prometheus text exposition")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "tail":
            as_json = (not sys.stdout.isatty()) if args.as_json is None else args.as_json
            anyio.run(tail, args.url, args.event_type, as_json, sys.stdout, args.limit)
        elif args.command == "deadletters":
            path = args.file or default_dead_letter_path()
            if args.action == "list":
                deadletters_list(path, args.transport, args.as_json, sys.stdout)
            elif args.action == "replay":
                records = load_dead_letters(path, args.transport)
                _, failed = anyio.run(deadletters_replay, path, records, _replay_config(args), sys.stdout)
                return 1 if failed else 0
            else:
                deadletters_purge(path, args.transport, args.yes, sys.stdout)
        elif args.command == "status":
            status(args.file, args.spool, args.prometheus, sys.stdout)
    except NotifyKitError as exc:
        print(f"notifykit: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

