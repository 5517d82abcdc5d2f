"""RBD images: where they are (``rbd://POOL/IMAGE?conf=PATH&id=CLIENT``) and how librbd is
reached (the backup side, snapshots and diffs, is ``_rbd_source``; an image as a restore
target, ``_rbd_target``).

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
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import BackupConfigError, BackupError, VolumeError

__all__ = ["Connection", "RbdLocation", "RbdTransientError", "binding", "connect", "failure", "image_size",
           "open_image", "rbd_volume_id", "reason", "remove_snapshot", "snapshot_name"]

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


def reason(exc: BaseException) -> str:
    """librados' message (errno and the call), never a key."""
    return str(exc) or type(exc).__name__


def failure(exc: BaseException, loc: RbdLocation, what: str, doing: str,
            permanent: type[BackupError] = VolumeError) -> BackupError:
    """A librados/librbd error as one line: ``{what} rbd://POOL/IMAGE: {doing}: …``."""
    code = getattr(exc, "errno", None)
    where = f"{what} {loc.display}: {doing}"
    if code in _DENIED or type(exc).__name__ == "PermissionError":
        return permanent(f"{where}: access denied for {loc.who} ({reason(exc)}): check its key or keyring and its"
                         f" caps on pool {loc.pool!r}")
    if code in _TRANSIENT or type(exc).__name__ in ("TimedOut", "Timeout"):
        return RbdTransientError(f"{where}: the cluster did not answer in time ({reason(exc)}); try again")
    return permanent(f"{where}: {reason(exc)}")


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
                raise permanent(f"{what} {loc.display}: cannot connect as {loc.who}: {reason(exc)}: check the"
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
