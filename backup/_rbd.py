"""RBD images: where they are (``rbd://POOL/IMAGE?conf=PATH&id=CLIENT``), how librbd is
reached, and an image as a restore target (the backup side, snapshots and diffs, is
``_rbd_source``).

The binding is Debian's ``python3-rbd`` (with ``python3-rados``), reached from the venv
through ``scripts/link-ceph-bindings`` like the rados store's. Every call blocks: callers run
them in worker threads. A volume URL is recorded in the catalog (``volume_path``), so it
takes no secret: the client's key comes from the conf's keyring or ``keyring=PATH``.

Errors are one line naming the image and the client, never a key: a missing pool or image,
a refused key or cap are permanent (:class:`~._errors.VolumeError` for a source,
:class:`~._errors.RestoreTargetError` for a target); a cluster that does not answer within
the op timeouts is :class:`RbdTransientError` (retrying the command may succeed).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import BackupConfigError, BackupError, RestoreTargetError, VolumeError
from ._liveness import current_process, process_alive
from ._target import RestoreTarget, RestoreTargetBusyError, TargetLock

__all__ = ["RbdLocation", "RbdTarget", "RbdTransientError", "connect", "image_size", "lock_rbd_target",
           "open_rbd_target", "rbd_volume_id", "remove_snapshot", "snapshot_name"]

log = logging.getLogger("backup")

SCHEME = "rbd://"
SNAPSHOT_PREFIX = "notifykit-"
INSTALL_HINT = ("rbd:// volumes need Ceph's Python bindings (python3-rbd and python3-rados, not on PyPI): apt-get"
                " install python3-rbd python3-rados, then make the venv see them with scripts/link-ceph-bindings")
OP_TIMEOUT = 30
_OPTIONS = ("conf", "id", "keyring")
_TRANSIENT = {errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ESHUTDOWN, errno.ENOTCONN, errno.ECONNREFUSED,
              errno.ECONNRESET}
_DENIED = {errno.EACCES, errno.EPERM}
_LOCK_TAG = "notifykit-restore"


class RbdTransientError(VolumeError):
    """The cluster did not answer in time (a monitor or OSD down, EAGAIN): may pass, so
    running the command again may succeed."""


def binding() -> tuple[Any, Any]:
    """(rados, rbd), imported on first use (only rbd:// volumes load librbd), or a
    BackupConfigError saying how to install them."""
    try:  # no stubs: pyproject's mypy override for rados/rbd
        import rados
        import rbd
    except ImportError:  # Debian packages: no extra can bring them
        raise BackupConfigError(INSTALL_HINT) from None
    return rados, rbd


def snapshot_name(backup_id: str) -> str:
    """The RBD snapshot a backup takes and reads: named after the backup."""
    return f"{SNAPSHOT_PREFIX}{backup_id}"


@dataclass(frozen=True, slots=True)
class RbdLocation:
    """An image of a pool, and the client (and conf) to reach it as."""

    pool: str
    image: str
    conf: str | None = None
    client_id: str = "admin"
    keyring: str | None = None

    @property
    def display(self) -> str:
        """``rbd://POOL/IMAGE``: what messages and the volume id name."""
        return f"{SCHEME}{self.pool}/{self.image}"

    @property
    def who(self) -> str:
        return f"client.{self.client_id} ({self.conf or 'the default ceph.conf'})"

    @classmethod
    def parse(cls, url: str) -> RbdLocation:
        """``rbd://POOL/IMAGE[?conf=PATH&id=CLIENT&keyring=PATH]``; BackupConfigError naming the problem."""
        parts = urlsplit(url)
        shape = f"an rbd URL must look like rbd://POOL/IMAGE?conf=PATH&id=CLIENT, got {url.split('?', 1)[0]!r}"
        if parts.scheme != "rbd" or "@" in parts.netloc or parts.fragment:
            raise BackupConfigError(shape + (" (it takes no USER:KEY@: the key comes from a keyring)"
                                             if "@" in parts.netloc else ""))
        pool, image = unquote(parts.netloc), unquote(parts.path.lstrip("/"))
        if not pool or not image or "/" in image or "@" in image:
            raise BackupConfigError(shape)
        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "key":
                raise BackupConfigError(f"{pool}/{image}: an rbd URL takes no key= (the URL is recorded in the catalog):"
                                        " give keyring=PATH or a conf whose keyring holds the client's key")
            if key not in _OPTIONS:
                raise BackupConfigError(f"{pool}/{image}: unknown rbd URL option {key!r} (known: {', '.join(_OPTIONS)})")
            if key in options:
                raise BackupConfigError(f"{pool}/{image}: rbd URL option {key!r} given twice")
            options[key] = value
        client_id = options.get("id", "admin")
        if not client_id or client_id.startswith("client.") or any(c.isspace() for c in client_id):
            raise BackupConfigError(f"{pool}/{image}: id must be the client's id as `rbd --id` takes it (e.g."
                                    f" 'backup' for client.backup), got {client_id!r}")
        return cls(pool, image, options.get("conf") or None, client_id, options.get("keyring") or None)

    def client_conf(self) -> dict[str, str]:
        """Bounded calls, quiet stderr, and discards that always zero (a partial discard
        skipped would leave old bytes where a restore means zeros)."""
        conf = {"rados_osd_op_timeout": str(OP_TIMEOUT), "rados_mon_op_timeout": str(OP_TIMEOUT),
                "client_mount_timeout": str(OP_TIMEOUT), "log_to_stderr": "false", "err_to_stderr": "false",
                "rbd_skip_partial_discard": "false"}
        if self.keyring:
            conf["keyring"] = self.keyring
        return conf


def rbd_volume_id(url: str) -> str:
    """A volume id from the pool and image alone: the same from every host and client."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, RbdLocation.parse(url).display))


def _reason(exc: BaseException) -> str:
    """librados' message (errno and the call), never a key."""
    return str(exc) or type(exc).__name__


def failure(exc: BaseException, loc: RbdLocation, what: str, doing: str,
            permanent: type[BackupError] = VolumeError) -> BackupError:
    """A librados/librbd error as one line: ``{what} rbd://POOL/IMAGE: {doing}: …``."""
    code = getattr(exc, "errno", None)
    where = f"{what} {loc.display}: {doing}"
    if code in _DENIED or type(exc).__name__ == "PermissionError":
        return permanent(f"{where}: access denied for {loc.who} ({_reason(exc)}): check its key or keyring and its"
                         f" caps on pool {loc.pool!r}")
    if code in _TRANSIENT or type(exc).__name__ in ("TimedOut", "Timeout"):
        return RbdTransientError(f"{where}: the cluster did not answer in time ({_reason(exc)}); try again")
    return permanent(f"{where}: {_reason(exc)}")


class Connection:
    """A cluster connection and the pool's I/O context, closed together."""

    def __init__(self, cluster: Any, ioctx: Any) -> None:
        self.cluster = cluster
        self.ioctx = ioctx

    def close(self) -> None:
        try:
            self.ioctx.close()
        finally:
            self.cluster.shutdown()


def connect(loc: RbdLocation, what: str, permanent: type[BackupError] = VolumeError) -> Connection:
    """Connect as the URL's client and open its pool (blocking)."""
    rados, _ = binding()
    try:
        cluster = rados.Rados(rados_id=loc.client_id, conffile=loc.conf or "", conf=loc.client_conf())
    except rados.Error as exc:
        if loc.conf and getattr(exc, "errno", None) == errno.ENOENT:
            raise permanent(f"{what} {loc.display}: cannot read conf {loc.conf!r}: no such file") from None
        raise failure(exc, loc, what, f"invalid client configuration for {loc.who}", permanent) from None
    try:
        try:
            cluster.connect(timeout=OP_TIMEOUT)
        except rados.Error as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                raise permanent(f"{what} {loc.display}: cannot connect as {loc.who}: no monitor address or no keyring"
                                " for the client found (conf or keyring option)") from None
            if getattr(exc, "errno", None) == errno.EINVAL:
                raise permanent(f"{what} {loc.display}: cannot connect as {loc.who}: {_reason(exc)}: check the"
                                " keyring and conf") from None
            raise failure(exc, loc, what, f"cannot connect as {loc.who}", permanent) from None
        try:
            ioctx = cluster.open_ioctx(loc.pool)
        except rados.Error as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                raise permanent(f"{what} {loc.display}: the pool {loc.pool!r} does not exist") from None
            raise failure(exc, loc, what, f"cannot open pool {loc.pool!r}", permanent) from None
    except BaseException:
        cluster.shutdown()
        raise
    return Connection(cluster, ioctx)


def open_image(conn: Connection, loc: RbdLocation, what: str, *, snapshot: str | None = None,
               read_only: bool = False, permanent: type[BackupError] = VolumeError) -> Any:
    """The image (at ``snapshot``); ``permanent`` naming it when it does not exist."""
    _, rbd = binding()
    try:
        return rbd.Image(conn.ioctx, loc.image, snapshot=snapshot, read_only=read_only)
    except rbd.ImageNotFound:
        if snapshot is not None:
            raise permanent(f"{what} {loc.display}: the image or its snapshot {snapshot!r} does not exist") from None
        raise permanent(f"{what} {loc.display}: the image does not exist in pool {loc.pool!r}") from None
    except rbd.Error as exc:
        raise failure(exc, loc, what, "cannot open the image", permanent) from None


def image_size(url: str) -> int:
    """The image's size in bytes (VolumeError, or RbdTransientError, if it cannot be read)."""
    loc = RbdLocation.parse(url)
    conn = connect(loc, "volume")
    try:
        image = open_image(conn, loc, "volume", read_only=True)
        try:
            return int(image.size())
        finally:
            image.close()
    finally:
        conn.close()


def remove_snapshot(url: str, snapshot: str) -> bool:
    """Remove a backup's snapshot; False if it (or its image or pool) is already gone."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    what = "volume"
    try:
        conn = connect(loc, what)
    except RbdTransientError:
        raise
    except VolumeError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    try:
        try:
            image = rbd.Image(conn.ioctx, loc.image)
        except rbd.ImageNotFound:
            return False
        try:
            image.remove_snap(snapshot)
        except rbd.ImageNotFound:
            return False
        except rbd.Error as exc:
            raise failure(exc, loc, what, f"cannot remove snapshot {snapshot!r}") from None
        finally:
            image.close()
        log.info("removed snapshot %s of %s", snapshot, loc.display)
        return True
    finally:
        conn.close()


# -- the restore lock -----------------------------------------------------------------------
#
# The image's own exclusive lock (the exclusive-lock feature, on by default) taken
# explicitly by the handle that writes (``lock_acquire``): librbd then refuses every other
# client's writes (EROFS) until it is released, and breaks it by itself when its holder died.
# Which restore holds it is written beside it in the image's metadata (NOTE), so a second
# restore is refused by name. An image without the feature gets an advisory lock instead
# (``rbd lock ls``), its cookie naming the restore.

NOTE = "notifykit.restore"


def _note(holder: Mapping[str, Any]) -> str:
    pid, token = current_process()
    return json.dumps({"backup_id": holder.get("backup_id"), "pid": holder.get("pid", pid),
                       "host": holder.get("host"), "token": token}, sort_keys=True)


def _holder(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text or "")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _busy(image: Any, loc: RbdLocation, *, ignore_dead: bool) -> RestoreTargetBusyError | None:
    """Why the image is in use (named by the restore's note), or None when it is not."""
    _, rbd = binding()
    try:
        owners = [str(o.get("owner")) for o in image.lock_get_owners()]
    except rbd.Error:  # no exclusive-lock feature
        owners = []
    advisory = [(str(c), str(k)) for c, k, _ in (image.list_lockers() or {}).get("lockers", [])
                if not str(k).startswith("auto ")]
    if not owners and not advisory:
        return None
    try:
        holder = _holder(image.metadata_get(NOTE))
    except (rbd.Error, KeyError):
        holder = {}
    if advisory and not holder:
        holder = _holder(advisory[0][1])
    if holder.get("backup_id"):
        if ignore_dead and holder.get("host") == socket.gethostname() and \
                not process_alive(holder.get("pid"), holder.get("token")):
            return None  # its restore died: lock_acquire breaks the lock
        return RestoreTargetBusyError(
            f"restore target {loc.display!r} is in use by the restore of backup {holder['backup_id']} (process"
            f" {holder.get('pid')} on {holder.get('host')}); wait for it to finish or choose another target",
            {k: holder.get(k) for k in ("backup_id", "pid", "host")})
    who = owners[0] if owners else advisory[0][0]
    return RestoreTargetBusyError(f"restore target {loc.display!r} is in use: {who} holds its lock (is it open for"
                                  f" writing, e.g. mapped or attached? rbd lock ls {loc.pool}/{loc.image}); stop that"
                                  " or choose another target", None)


class RbdTargetLock(TargetLock):
    """What the service holds before a restore starts: nothing, once the image was found not
    in use; the restore's writing handle takes the lock itself (:func:`_acquire`)."""

    def __init__(self) -> None:  # no descriptor: no super().__init__
        pass

    def release(self) -> None:
        pass


def lock_rbd_target(url: str, holder: Mapping[str, Any]) -> TargetLock:
    """Refuse, before anything starts, a restore to an image another restore (or client) is
    writing: RestoreTargetBusyError naming it. A missing image is not in use."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    conn = connect(loc, "restore target", RestoreTargetError)
    try:
        try:
            image = rbd.Image(conn.ioctx, loc.image)  # read-only handles cannot see lock owners
        except rbd.ImageNotFound:
            return RbdTargetLock()
        except rbd.Error as exc:
            raise failure(exc, loc, "restore target", "cannot open the image", RestoreTargetError) from None
        try:
            busy = _busy(image, loc, ignore_dead=True)
        finally:
            image.close()
        if busy is not None:
            raise busy
        return RbdTargetLock()
    finally:
        conn.close()


def _acquire(image: Any, loc: RbdLocation, operation: str) -> str | None:
    """Take the image for this restore: its exclusive lock (None returned) or, without the
    feature, an advisory lock (its cookie returned); the holder's note is written beside it."""
    _, rbd = binding()
    note = _note({"backup_id": operation, "host": socket.gethostname()})
    cookie = None
    try:
        image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
    except rbd.InvalidArgument:  # no exclusive-lock feature: an advisory lock
        try:
            image.lock_exclusive(note)
        except (rbd.ImageBusy, rbd.ImageExists):
            raise _busy(image, loc, ignore_dead=False) or RestoreTargetError(
                f"restore target {loc.display!r}: its lock kept changing; try again") from None
        cookie = note
    except (rbd.ReadOnlyImage, rbd.ImageBusy):
        raise _busy(image, loc, ignore_dead=False) or RestoreTargetError(
            f"restore target {loc.display!r}: its lock kept changing; try again") from None
    except rbd.Error as exc:
        raise failure(exc, loc, "restore target", "cannot lock the image", RestoreTargetError) from None
    try:
        image.metadata_set(NOTE, note)
    except rbd.Error as exc:
        _release(image, cookie)
        raise failure(exc, loc, "restore target", "cannot note its restore lock", RestoreTargetError) from None
    return cookie


def _release(image: Any, cookie: str | None) -> None:
    """Remove the note and release the lock :func:`_acquire` took."""
    _, rbd = binding()
    try:
        image.metadata_remove(NOTE)
    except (rbd.Error, KeyError):
        pass
    try:
        if cookie is not None:
            image.unlock(cookie)
        else:
            image.lock_release()
    except rbd.Error as exc:  # broken by an operator meanwhile: nothing to undo
        log.warning("restore target: its lock was not released: %s", _reason(exc))


# -- the restore target -------------------------------------------------------------------


class RbdTarget(RestoreTarget):
    """An image a restore writes in place: written at offsets, zero ranges discarded; an image
    the restore created is removed again if the restore fails."""

    def __init__(self, loc: RbdLocation, conn: Connection, image: Any, created: bool,
                 cookie: str | None) -> None:  # no super().__init__: there is no descriptor
        self.where = loc.display
        self.fd = -1
        self.in_place = not created
        self._loc = loc
        self._conn: Connection | None = conn
        self._image = image
        self._created = created
        self._cookie = cookie  # the advisory lock's cookie (None: the image's exclusive lock)

    @property
    def written_path(self) -> str:
        return self.where

    def _error(self, exc: BaseException, doing: str) -> BackupError:
        return failure(exc, self._loc, "restore target", doing, BackupError)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        _, rbd = binding()
        try:
            done = self._image.write(bytes(data), offset)
        except rbd.Error as exc:
            raise self._error(exc, f"cannot write at byte {offset}") from None
        if done != len(data):
            raise BackupError(f"restore target {self.where}: wrote {done} of {len(data)} bytes at byte {offset}")

    def zero(self, offset: int, length: int) -> bool:
        """Discard: the range reads back as zeros (partial discards are not skipped)."""
        _, rbd = binding()
        try:
            self._image.discard(offset, length)
        except rbd.Error as exc:
            raise self._error(exc, f"cannot discard {length} bytes at byte {offset}") from None
        return True

    def prepare(self, size: int) -> None:
        """Nothing to do: a created image is all zeros at the backup's size already."""

    def _close_image(self) -> None:
        image, self._image = self._image, None
        if image is None:
            return
        try:
            _release(image, self._cookie)
        finally:
            image.close()

    def finish(self, size: int) -> None:
        _, rbd = binding()
        try:
            self._image.flush()
        except rbd.Error as exc:
            raise self._error(exc, "cannot flush the writes") from None  # the restore then discards
        self._created = False  # finished: kept
        self.discard()

    def discard(self) -> None:
        """Close (releasing the lock it took); an image this restore created is removed: it
        holds a partial restore."""
        _, rbd = binding()
        conn, self._conn = self._conn, None
        try:
            self._close_image()
            if self._created and conn is not None:
                self._created = False
                try:
                    rbd.RBD().remove(conn.ioctx, self._loc.image)
                except rbd.Error as exc:
                    log.warning("restore target %s: the partly restored image it created could not be removed: %s",
                                self.where, _reason(exc))
        finally:
            if conn is not None:
                conn.close()


def open_rbd_target(url: str, *, overwrite: bool, create: bool, operation: str, size: int) -> RbdTarget:
    """An existing image of at least ``size`` bytes (``overwrite`` required: it is written in
    place), or with ``create`` a new one of ``size`` bytes (never an image that exists)."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    where = loc.display
    conn = connect(loc, "restore target", RestoreTargetError)
    try:
        created = False
        try:
            image = rbd.Image(conn.ioctx, loc.image)
        except rbd.ImageNotFound:
            if not create:
                raise RestoreTargetError(f"restore target {where} does not exist: pass --create to create it (or"
                                         " create it with rbd create)") from None
            try:
                rbd.RBD().create(conn.ioctx, loc.image, size)
            except rbd.ImageExists:
                raise RestoreTargetError(f"restore target {where} appeared while the restore started; it was not"
                                         " written: pass --overwrite to write it") from None
            except rbd.Error as exc:
                raise failure(exc, loc, "restore target", "cannot create the image", RestoreTargetError) from None
            created = True
            image = rbd.Image(conn.ioctx, loc.image)
        except rbd.Error as exc:
            raise failure(exc, loc, "restore target", "cannot open the image", RestoreTargetError) from None
        try:
            if not created:
                if not overwrite:
                    raise RestoreTargetError(f"restore target {where} is an existing RBD image; pass --overwrite to"
                                             " write it (or restore to a new image with --create)")
                have = int(image.size())
                if have < size:
                    raise RestoreTargetError(f"restore target {where} is {have} bytes, the backup {size}: grow it"
                                             " (rbd resize) or restore to a new image with --create")
            # A created image is left if its lock fails: another restore that took it writes it.
            cookie = _acquire(image, loc, operation)
        except BaseException:
            image.close()
            raise
        return RbdTarget(loc, conn, image, created, cookie)
    except BaseException:
        conn.close()
        raise
