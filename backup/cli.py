"""``notifykit-backup``: create, restore, verify, delete, list and show backups, reset a
status, export or import a record, audit usage, or run the demo.

Settings come from options, ``NOTIFYKIT_BACKUP_*`` environment variables and a TOML file
(``--config`` or ``NOTIFYKIT_BACKUP_CONFIG``); notifications go to ``log://stderr`` unless
``--notifier URL`` or ``--notifier-config TOML`` say otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

import anyio

from notifykit import NotifyKitError, __version__, redact_text
from notifykit._console import LogLines, own_log_lines, plain_help

from ._asyncapi import backup_asyncapi
from ._audit import audit_period
from ._catalog import BackupRecord
from ._compression import COMPRESSIONS
from ._config import BackupConfig, parse_size
from ._console import ProgressDisplay, build_notifier
from ._demo import run_demo
from ._errors import BackupError
from ._interrupt import LOCK_GRACE, Interruption, WatchedCatalog, interruption_message
from ._otel import otel_export
from ._records import export_record, import_record
from ._reset import reset_status
from ._setup import build_catalog, open_backup_service
from ._sqlite import SQLiteCatalog
from ._text import display_text
from ._verify import verify_backup

__all__ = ["ProgressDisplay", "build_notifier", "main"]


def _login_name() -> str:
    """Who runs the command, recorded by reset-status."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        return f"uid {os.getuid()}"


def _print_record(record: BackupRecord, out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(record.as_dict(), indent=2) + "\n")
        return
    for key, value in record.as_dict().items():
        out.write(f"{key:24} {display_text(str(value))}\n")


def _print_table(records: Sequence[BackupRecord], out: TextIO) -> None:
    out.write(f"{'id':36}  {'status':15}  {'size_bytes':>12}  {'objects':>7}  {'created_at':25}  {'host':16}  name\n")
    for r in records:
        host = r.worker_host or r.host
        out.write(f"{r.id:36}  {r.status.value:15}  {r.size_bytes:12d}  {r.object_count:7d}  "
                  f"{r.created_at.isoformat(timespec='seconds'):25}  {display_text(host):16}  "
                  f"{display_text(r.display_name or '')}\n")


# -- commands -----------------------------------------------------------------------------

async def run_until_sigterm(args: argparse.Namespace, config: BackupConfig, out: TextIO, err: TextIO) -> int:
    """run_command, stopped by SIGTERM or Ctrl-C (SIGINT): the operation ends as an error event
    and status, and the Notifier drains within its close_timeout (a durable transport keeps the
    rest in its spool). Exit status 143 (SIGTERM) or 130 (SIGINT), and one line that says what
    the catalog holds because of it (interruption_message).

    Both signals cancel the command's task group rather than relying on asyncio's one-shot
    cancellation of the main task, which a cancel scope finishing at the same moment can absorb:
    a scope's cancellation is level-triggered and cannot be lost. Every wait is cancellable:
    a lock on the SQLite catalog held by another process is waited for in short steps."""
    stopped_by: list[int] = []
    interruption = Interruption()
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        stopped_by.append(signum)
                        if interruption.catalog is not None:
                            interruption.catalog.give_up_lock_waits(LOCK_GRACE)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            result = await run_command(args, config, out, err, interruption)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the task group wraps the command's own error: unwrap it
        if stopped_by:  # an error the stop itself caused (e.g. a lock wait given up): the line below says it
            pass
        elif len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        else:
            raise
    if stopped_by:
        name = signal.Signals(stopped_by[0]).name
        err.write(f"notifykit-backup: {interruption_message(name, interruption.catalog)}\n")
        return 130 if stopped_by[0] == signal.SIGINT else 143
    return result


async def run_command(args: argparse.Namespace, config: BackupConfig, out: TextIO, err: TextIO,
                      interruption: Interruption | None = None) -> int:
    if args.command == "demo":
        return await run_demo(config, parse_size(args.size, "--size"), out, err, keep=args.keep)
    if args.command == "asyncapi":  # a document only: no catalog, no store, no notifier
        out.write(json.dumps(backup_asyncapi(config), indent=2) + "\n")
        return 0
    inner = build_catalog(config)
    if isinstance(inner, SQLiteCatalog):
        def waiting() -> None:
            err.write(f"notifykit-backup: waiting for the catalog lock ({str(inner.path)!r} is locked by another"
                      f" process; up to {inner.lock_timeout:.0f} s, Ctrl-C stops)\n")
            err.flush()

        inner.on_lock_wait = waiting
    catalog = WatchedCatalog(inner)
    if interruption is not None:
        interruption.catalog = catalog
    async with build_notifier(config) as notifier, open_backup_service(config, notifier, catalog=catalog) as service:
        if args.command == "create":
            display = ProgressDisplay("create", err)
            record = await service.create_backup(args.path, name=args.name, volume_id=args.volume_id,
                                                 on_progress=display, incremental=args.incremental)
            display.finish()
            if args.json:
                _print_record(record, out, as_json=True)
            else:
                out.write(record.id + "\n")
        elif args.command == "restore":
            display = ProgressDisplay("restore", err)
            await service.restore_backup(args.id, args.target, overwrite=args.overwrite, on_progress=display,
                                         create=args.create)
            display.finish()
            out.write(f"restored {args.id} to {display_text(args.target)}\n")
        elif args.command == "verify":
            display = ProgressDisplay("verify", err)
            report = await verify_backup(service, args.id, on_progress=display)
            display.finish()
            out.write(f"verified {report.backup_id}: {report.objects} objects ({report.stored_bytes} bytes stored)"
                      f" of {report.backups} backup(s) for {report.volume_bytes} volume bytes, every block matches\n")
        elif args.command == "reset-status":
            display = ProgressDisplay("verify", err)  # shown only while --state available verifies
            record = await reset_status(service, args.id, args.state, user=_login_name(), on_progress=display)
            display.finish()
            out.write(f"{record.id}: status reset from {record.reset_from} to {record.status.value}\n")
        elif args.command == "export-record":
            exported = await export_record(service, args.id)
            out.write(json.dumps(exported.as_dict(), indent=2) + "\n" if args.json else
                      f"backup_service {exported.backup_service}\nbackup_url     {exported.backup_url}\n")
        elif args.command == "import-record":
            display = ProgressDisplay("verify", err)
            record = await import_record(service, args.service, args.url, on_progress=display)
            display.finish()
            out.write(f"imported {record.id}: {record.status.value}\n")
        elif args.command == "delete":
            await service.delete_backup(args.id)
            out.write(f"deleted {args.id}\n")
        elif args.command == "list":
            records = await service.list(include_deleted=args.all)
            if args.json:
                out.write(json.dumps([r.as_dict() for r in records], indent=2) + "\n")
            else:
                _print_table(records, out)
        elif args.command == "show":
            _print_record(await service.show(args.id), out, args.json)
        elif args.command == "audit":
            start, end = audit_period(args.start, args.end)
            records = await service.audit(start, end)
            for record in records:
                out.write(f"{record.id} {record.status.value} {record.size_bytes}\n")
            err.write(f"audit {start.isoformat()} to {end.isoformat()}: {len(records)} backup.exists\n")
        elif args.command == "recover":
            for record in await service.recover_interrupted():
                out.write(f"{record.id} {record.status.value}: {display_text(record.fail_reason or '')}\n")
    return 0


# -- argument parsing -----------------------------------------------------------------------

class _UsageError(Exception):
    """A bad argument: main() prints it as one ``notifykit-backup: error:`` line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse without its usage block on errors: one line naming the command, the problem
    and where to get help (``--help`` still prints everything)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise _UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    g = common.add_argument_group("settings (also NOTIFYKIT_BACKUP_* variables and a TOML file)")
    g.add_argument("--config", help="TOML file with a [backup] table (env NOTIFYKIT_BACKUP_CONFIG)")
    g.add_argument("--catalog", dest="catalog_path",
                   help="SQLite catalog file, or postgresql://USER:PASSWORD@HOST:PORT/DB shared by several hosts")
    g.add_argument("--store", dest="store",
                   help="object store: a directory, file:///DIR, swift://USER:KEY@HOST:PORT/auth/v1.0 or"
                        " s3://HOST/BUCKET (s3+http:// on loopback); see docs/backup.md")
    g.add_argument("--chunk-size", dest="chunk_size", help="chunk size, e.g. 4MiB (default 4MiB)")
    g.add_argument("--compression", choices=COMPRESSIONS, help="chunk compression (default zstd)")
    g.add_argument("--notifier", dest="notifier_url", help="notifier URL (default log://stderr)")
    g.add_argument("--notifier-config", dest="notifier_config", help="notifykit TOML file with several transports")
    g.add_argument("--host", help="host name in publisher_id backup.<host> (default: this machine)")

    parser = _Parser(prog="notifykit-backup", description=plain_help(__doc__), epilog=plain_help(__doc__, 1))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--otel", action="store_true", help="export the command's OpenTelemetry spans over OTLP,"
                        " configured by the OTEL_* variables (env NOTIFYKIT_BACKUP_OTEL=1; needs notifykit[otel-sdk])")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", parents=[common], help="back up a file, block device or RBD image (rbd://POOL/IMAGE)")
    c.add_argument("path")
    c.add_argument("--name", help="display name")
    c.add_argument("--volume-id", help="volume id to record (default: derived from the path)")
    c.add_argument("--json", action="store_true", help="print the whole record as JSON")
    c.add_argument("--incremental", action="store_true",
                   help="store only the blocks changed since the volume's latest available backup")
    r = sub.add_parser("restore", parents=[common], help="restore a backup to a new file (or --overwrite)")
    r.add_argument("id")
    r.add_argument("target")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing file, or write a block device or an existing RBD image")
    r.add_argument("--create", action="store_true", help="create the RBD image (rbd://POOL/IMAGE) restored to")
    v = sub.add_parser("verify", parents=[common],
                       help="read every object of a backup and its parents, check every block; write nothing")
    v.add_argument("id")
    rs = sub.add_parser("reset-status", parents=[common], help="force a backup's status: error always; available"
                        " after a verify passes (or from restoring)")
    rs.add_argument("id")
    rs.add_argument("--state", required=True, choices=("available", "error"), help="the status to set")
    ex = sub.add_parser("export-record", parents=[common],
                        help="print backup_service and backup_url: what import-record needs (no secrets)")
    ex.add_argument("id")
    ex.add_argument("--json", action="store_true")
    im = sub.add_parser("import-record", parents=[common], help="register an exported backup in this catalog"
                        " (its store given by --store), verify it, make it available")
    im.add_argument("service", help="backup_service, as export-record printed it")
    im.add_argument("url", help="backup_url, as export-record printed it")
    d = sub.add_parser("delete", parents=[common], help="delete a backup's objects")
    d.add_argument("id")
    ls = sub.add_parser("list", parents=[common], help="list backups")
    ls.add_argument("--all", action="store_true", help="include deleted backups")
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", parents=[common], help="show one backup")
    sh.add_argument("id")
    sh.add_argument("--json", action="store_true")
    sub.add_parser("recover", parents=[common],
                   help="mark this host's backups left creating/restoring/deleting by a dead process as failed")
    au = sub.add_parser("audit", parents=[common],
                        help="emit backup.exists for every backup that existed during a period (default: the last hour)")
    au.add_argument("--start", help="period start, ISO 8601 (UTC if no offset); default: the previous full hour")
    au.add_argument("--end", help="period end, ISO 8601 (UTC if no offset); default: --start + 1 hour")
    dm = sub.add_parser("demo", parents=[common], help="back up, restore, verify and delete a sample volume")
    dm.add_argument("--size", default="256MiB", help="sample volume size (default 256MiB)")
    dm.add_argument("--keep", action="store_true", help="keep the demo's work directory")
    sub.add_parser("asyncapi", parents=[common], help="print the AsyncAPI 3.0 document of the backup notifications"
                   " (channels of --notifier / --notifier-config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 1 when the operation or its settings fail, 2 for a bad argument,
    130/143 when interrupted; every error is one ``notifykit-backup: error:`` line (the
    service's log line saying the same is not printed as well; library logs are not shown)."""
    with own_log_lines(("notifykit", "backup")) as log_lines:
        return _main(argv, log_lines)


def _main(argv: Sequence[str] | None, log_lines: LogLines | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"notifykit-backup: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    try:
        config = BackupConfig.load(
            args.config, catalog_path=args.catalog_path, store=args.store, chunk_size=args.chunk_size,
            compression=args.compression, notifier_url=args.notifier_url, notifier_config=args.notifier_config,
            host=args.host)
        with otel_export(args.otel, sys.stderr):
            code = anyio.run(run_until_sigterm, args, config, sys.stdout, sys.stderr)
        if code in (130, 143) and log_lines is not None:
            log_lines.show_held(drop=True)  # the interruption's one line said what happened
        return code
    except (BackupError, NotifyKitError) as exc:
        if log_lines is not None:
            log_lines.show_held(str(exc))
        print(f"notifykit-backup: error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the demo's sample volume on a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"notifykit-backup: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the command could watch for signals, or a second Ctrl-C
        print("notifykit-backup: interrupted; see notifykit-backup list for what was recorded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
