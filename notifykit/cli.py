"""``notifykit`` command line: operator tools that work with any installed transport.

``notifykit tail URL`` prints notifications as they arrive on a broker;
``notifykit deadletters list|replay|purge`` inspects and re-drives dead letters;
``notifykit status`` shows a running (or dead) process's counters and its spool;
``notifykit asyncapi --config FILE`` prints the AsyncAPI document of an application's catalogue.
The CLI finds transports by URL scheme like the Notifier does, so it imports no backend.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NoReturn, TextIO

import anyio
import anyio.to_thread

from . import __version__
from ._asyncapi_command import application_asyncapi
from ._config import NotifierConfig, TransportConfig
from ._console import LogLines, own_log_lines, plain_help
from ._deadletter import MemoryDeadLetterSink, default_dead_letter_path, read_dead_letters, rewrite_dead_letters
from ._errors import ConfigError, NotifyKitError
from ._formats import decode_message
from ._loading import resolve_transport
from ._message import Notification
from ._notifier import Notifier
from ._policies import Filter, OverflowPolicy
from ._redact import redact_text
from ._spool import default_spool_path
from ._status_command import status, watch_status
from ._transport import Tailable
from ._url import parse_url

__all__ = ["main"]


def _one_line(message: dict[str, Any]) -> str:
    payload = json.dumps(message.get("payload"), ensure_ascii=False, separators=(",", ":"))
    if len(payload) > 160:
        payload = payload[:157] + "..."
    return (f"{message.get('timestamp')} {str(message.get('priority', '')).upper():8} "
            f"{message.get('event_type')} [{message.get('publisher_id')}] {payload}")


async def tail(url: str, event_glob: str, as_json: bool, out: TextIO, limit: int | None = None) -> int:
    """Print each decoded notification matching ``event_glob``; returns how many were printed."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1 (stop after N notifications), got {limit}")
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
    message = record.get("message")
    message_id = message.get("message_id") if isinstance(message, dict) else None
    return (str(record.get("transport")), str(message_id), str(record.get("failed_at")))


def _selected(record: dict[str, Any], transport: str | None) -> bool:
    return transport is None or record.get("transport") == transport


def _dead_letter_file(path: Path) -> Path | None:
    """``path``, or None when it is the default location and nothing was dead-lettered yet.
    A file named with ``--file`` that does not exist is an error (a typo must not read as
    "no dead letters")."""
    if path == default_dead_letter_path() and not path.exists() and not path.is_symlink():
        return None
    return path


def load_dead_letters(path: Path, transport: str | None) -> list[dict[str, Any]]:
    """The records of ``path`` (of one transport); bad lines skipped with one warning;
    a file that cannot be read is a ConfigError."""
    existing = _dead_letter_file(path)
    return [] if existing is None else [r for r in read_dead_letters(existing) if _selected(r, transport)]


def deadletters_list(path: Path, transport: str | None, as_json: bool, out: TextIO) -> int:
    records = load_dead_letters(path, transport)
    for record in records:
        message = record["message"]
        out.write(json.dumps(record, ensure_ascii=True) + "\n" if as_json else
                  f"{record.get('failed_at')} {record.get('transport')} {message.get('event_type')} "
                  f"{message.get('message_id')} {record.get('reason')}\n".encode("utf-8", "backslashreplace")
                  .decode("utf-8"))
    print(f"# {len(records)} dead letter(s) in {path}", file=sys.stderr)
    return len(records)


def _replay_config(args: argparse.Namespace) -> NotifierConfig:
    """``--config``: each letter goes to the transport of its own name. ``--url``: the URL
    is a transport named as a Notifier would name it (its ``name=``, else its scheme) and
    takes that transport's letters; ``--transport NAME`` re-routes NAME's letters to it
    instead (explicit), under that name."""
    if args.url:
        config = TransportConfig.from_url(args.url)
        name = args.transport or config.name or parse_url(config.url).scheme
        if args.transport and config.name and config.name != args.transport:
            raise ConfigError(f"replay --url names transport {config.name!r} but --transport is {args.transport!r};"
                              " give one name")
        return NotifierConfig(transports=(replace(config, name=name),))
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


def _replayable(record: dict[str, Any]) -> Notification | str:
    """The letter's notification, or why it cannot be re-sent."""
    try:
        return Notification.from_json(json.dumps(record["message"]))
    except (NotifyKitError, TypeError, ValueError) as exc:
        return str(exc).encode("utf-8", "backslashreplace").decode("utf-8")


async def deadletters_replay(path: Path, records: list[dict[str, Any]], config: NotifierConfig,
                             out: TextIO) -> tuple[int, int]:
    """Re-send each dead letter (same message_id) to the configured transport of the same
    name only; remove from the file exactly the ones delivered. Letters of a transport not
    configured, or that are no valid notification, stay untouched (one note each kind).
    Returns (delivered, dead-lettered again)."""
    existing = _dead_letter_file(path)
    if existing is None or not records:
        out.write("replayed 0: 0 delivered, 0 dead-lettered again\n")
        return 0, 0
    targets = {t.name: t for t in config.transports if t.name}
    sink = MemoryDeadLetterSink()
    delivered: set[tuple[str, str, str]] = set()
    attempted: set[tuple[str, str, str]] = set()
    unmatched: dict[str, int] = {}
    invalid: list[str] = []
    for name, target in targets.items():
        batch: list[tuple[dict[str, Any], Notification]] = []
        for record in records:
            if record.get("transport") != name:
                continue
            notification = _replayable(record)
            if isinstance(notification, str):
                invalid.append(f"{record['message'].get('message_id')}: {notification}")
            else:
                batch.append((record, notification))
        if not batch:
            continue
        # Every letter handed over is sent or dead-lettered again: never dropped, filtered,
        # refused or left in a spool that this command does not own.
        safe = replace(target, durable=False, overflow=OverflowPolicy.BLOCK, block_timeout=None, filter=Filter())
        notifier = Notifier(replace(config, transports=(safe,)), dead_letters=sink)
        handed: list[tuple[dict[str, Any], Notification]] = []
        failed_before = len(sink.letters)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signals, tg.cancel_scope)
            async with notifier:
                for record, notification in batch:
                    await notifier.emit(notification)
                    handed.append((record, notification))
            tg.cancel_scope.cancel()
        again = {letter.notification.message_id for letter in sink.letters[failed_before:]}
        stats = notifier.stats()[name]
        if stats.sent + stats.dead_lettered != len(handed):  # not expected: then remove nothing
            print(f"# transport {name!r}: {len(handed)} handed over but {stats.sent} sent and"
                  f" {stats.dead_lettered} dead-lettered again; its letters are left in the file", file=sys.stderr)
            del sink.letters[failed_before:]
            continue
        attempted.update(_record_key(r) for r, _ in handed)
        delivered.update(_record_key(r) for r, n in handed if n.message_id not in again)
    for record in records:
        if record.get("transport") not in targets:
            unmatched[str(record.get("transport"))] = unmatched.get(str(record.get("transport")), 0) + 1
    again_letters = list(sink.letters)
    await anyio.to_thread.run_sync(
        lambda: rewrite_dead_letters(existing, lambda r: _record_key(r) in attempted, again_letters))
    if unmatched:
        listed = ", ".join(f"{name!r} ({count})" for name, count in sorted(unmatched.items()))
        print(f"# {sum(unmatched.values())} dead letter(s) of transport(s) not in the configuration ({listed})"
              f" left in the file; configured: {', '.join(map(repr, targets)) or 'none'}", file=sys.stderr)
    if invalid:
        print(f"# {len(invalid)} dead letter(s) are not valid notifications and were left in the file: "
              + "; ".join(invalid[:3]) + ("; …" if len(invalid) > 3 else ""), file=sys.stderr)
    out.write(f"replayed {len(attempted)}: {len(delivered)} delivered, {len(again_letters)} dead-lettered again\n")
    return len(delivered), len(again_letters)


def deadletters_purge(path: Path, transport: str | None, yes: bool, out: TextIO) -> int:
    existing = _dead_letter_file(path)
    matching = 0 if existing is None else sum(1 for r in read_dead_letters(existing) if _selected(r, transport))
    if not yes:
        out.write(f"{matching} dead letter(s) would be purged from {path}; add --yes to purge\n")
        return matching
    removed = 0 if existing is None else rewrite_dead_letters(existing, lambda r: _selected(r, transport))
    out.write(f"purged {removed} dead letter(s) from {path}\n")
    return removed


class _UsageError(Exception):
    """A bad argument: main() prints it as one ``notifykit: error:`` line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse without its usage block on errors: one line that names the problem and
    where to get help (``--help`` still prints everything)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise _UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (stop after N notifications), got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="notifykit", description=plain_help(__doc__))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tail", help="print notifications arriving on a broker URL")
    t.add_argument("url", help="e.g. amqp://guest:guest@127.0.0.1:5672/ or kafka://127.0.0.1:9092/")
    t.add_argument("--event-type", default="*", help="glob of event types to show (default: all)")
    t.add_argument("--json", dest="as_json", action="store_true", default=None,
                   help="JSON lines (the default when stdout is not a terminal)")
    t.add_argument("--lines", dest="as_json", action="store_false", help="one readable line per event")
    t.add_argument("--limit", type=_positive_int, default=None, help="stop after N notifications (N >= 1)")

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
            target.add_argument("--url", help="send to this URL the letters of the transport of its name (name=,"
                                               " else its scheme), or of --transport NAME")
            target.add_argument("--config", type=Path, help="TOML configuration; each letter goes to the transport"
                                                            " of its own name only")
        if action == "purge":
            a.add_argument("--yes", action="store_true", help="really delete (otherwise only count)")

    st = sub.add_parser("status", help="counters and state of a Notifier (its status_path file) and its spool")
    st.add_argument("--file", type=Path, default=None, help="status JSON written by a Notifier (status_path)")
    st.add_argument("--spool", type=Path, default=None, help=f"spool directory (e.g. {default_spool_path()})")
    shape = st.add_mutually_exclusive_group()
    shape.add_argument("--prometheus", action="store_true", help="Prometheus text exposition")
    shape.add_argument("--json", dest="as_json", action="store_true", help="one JSON line: the status document and the spool")
    st.add_argument("--watch", action="store_true", help="print it again every --interval seconds until Ctrl-C")
    st.add_argument("--interval", type=_positive_seconds, default=1.0, help="seconds between --watch frames (default 1)")

    aa = sub.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of an application's event catalogue")
    aa.add_argument("--config", type=Path, required=True, help="the application's notifykit TOML (its transports"
                    " are the channels, its publisher_id the messages')")
    aa.add_argument("--catalogue", default=None, help="NAME registered in the notifykit.catalogues entry points"
                    " (default: the only one), or MODULE:ATTRIBUTE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with own_log_lines() as log_lines:
        return _main(argv, log_lines)


def _main(argv: Sequence[str] | None, log_lines: LogLines | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "tail":
            as_json = (not sys.stdout.isatty()) if args.as_json is None else args.as_json
            anyio.run(tail, args.url, args.event_type, as_json, sys.stdout, args.limit)
        elif args.command == "deadletters":
            path = args.file or default_dead_letter_path()
            if args.action == "list":
                deadletters_list(path, args.transport, args.as_json, sys.stdout)
            elif args.action == "replay":
                config = _replay_config(args)  # a bad --config/--url first, before the file is read
                records = load_dead_letters(path, args.transport)
                _, failed = anyio.run(deadletters_replay, path, records, config, sys.stdout)
                return 1 if failed else 0
            else:
                deadletters_purge(path, args.transport, args.yes, sys.stdout)
        elif args.command == "status" and args.watch:
            try:
                watch_status(args.file, args.spool, args.prometheus, args.as_json, args.interval, sys.stdout)
            except KeyboardInterrupt:  # how a watch ends
                return 0
        elif args.command == "status":
            status(args.file, args.spool, args.prometheus, sys.stdout, args.as_json)
        elif args.command == "asyncapi":
            sys.stdout.write(json.dumps(application_asyncapi(args.config, args.catalogue), indent=2) + "\n")
    except (NotifyKitError, _UsageError) as exc:
        if log_lines is not None:
            log_lines.show_held(str(exc))
        print(f"notifykit: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

