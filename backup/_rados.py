"""``rados`` object store: each chunk one RADOS object in a Ceph pool, through librados.

Ceph-native, like Cinder's Ceph backup driver: no gateway in between. The binding is
Debian's ``python3-rados`` (built against Debian's librados; it is not on PyPI), which the
venv reaches through ``scripts/link-ceph-bindings`` (run by the Makefile's install targets).

Layout: ``rados://POOL[/PREFIX]?conf=PATH&id=CLIENT`` — each backup's objects live in their
own RADOS namespace of the pool, ``backup_<id>`` (or ``PREFIX/backup_<id>``), under their
plain names. A namespace is server-side: listing a backup asks the OSDs for that namespace
only, two backups can never see each other's objects, and a cephx cap may confine a client
to ``namespace=PREFIX/*``. Deleting a backup removes its objects; an empty namespace is no
object at all, so nothing is left in the pool.

librados calls block, so each runs in a worker thread (at most :data:`MAX_THREADS` at once;
the chunked driver keeps ``uploads`` in flight). ``write_full`` is atomic and acknowledged
once every replica has it: there is no sync step. ``rados_osd_op_timeout`` and
``rados_mon_op_timeout`` bound every call, so a stopped OSD turns into ETIMEDOUT, which is
retried by ``StoreRetry`` and then reported, instead of a backup hanging forever.
"""

from __future__ import annotations

import errno
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import anyio
import anyio.to_thread

from ._errors import (
    BackupConfigError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreFullError,
    PermanentObjectStoreError,
    TransientObjectStoreError,
)
from ._objectstore import validate_name
from ._retry import StoreRetry
from ._stores import StoreSettings

try:
    import rados as _rados_module  # no stubs: pyproject's mypy override for rados
except ImportError:  # python3-rados is a Debian package: the extra cannot bring it
    _rados_module = None

__all__ = ["RadosObjectStore", "RadosOptions"]

_T = TypeVar("_T")

INSTALL_HINT = ("the rados store needs Ceph's Python bindings (python3-rados, not on PyPI): apt-get install"
                " python3-rados, then make the venv see them with scripts/link-ceph-bindings (make does it)")
# A stopped OSD answers no more: three tries of up to rados_osd_op_timeout each, then fail.
DEFAULT_RETRY = StoreRetry(attempts=3, backoff=0.5, max_backoff=8.0)
DEFAULT_UPLOADS = 8
DEFAULT_OSD_OP_TIMEOUT = 30.0
DEFAULT_MON_OP_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 30.0
# librados calls in worker threads at once (a backstop above the driver's own ``uploads``).
MAX_THREADS = 32
# A read asks for this many bytes (more than a default 4 MiB chunk); a larger object raises it to
# the power of two above its size, at most osd_max_object_size's default (the binding allocates it).
FIRST_READ_BOUND = 8 * 1024 * 1024
MAX_READ_BOUND = 128 * 1024 * 1024
_TRANSIENT = {errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ESHUTDOWN, errno.ENOTCONN, errno.ECONNREFUSED,
              errno.ECONNRESET, errno.EBUSY}
_DENIED = {errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_TOO_BIG = {errno.E2BIG, errno.EFBIG}


class _Ioctx(Protocol):
    """The part of ``rados.Ioctx`` this store uses (the binding ships no type stubs)."""

    def set_namespace(self, nspace: str) -> None: ...
    def write_full(self, key: str, data: bytes) -> int: ...
    def read(self, key: str, length: int = ..., offset: int = ...) -> bytes: ...
    def stat(self, key: str) -> tuple[int, Any]: ...
    def remove_object(self, key: str) -> bool: ...
    def list_objects(self) -> Iterable[Any]: ...
    def close(self) -> None: ...


class _Cluster(Protocol):
    """The part of ``rados.Rados`` this store uses."""

    def connect(self, timeout: int = ...) -> None: ...
    def open_ioctx(self, ioctx_name: str) -> _Ioctx: ...
    def get_fsid(self) -> str: ...
    def shutdown(self) -> None: ...


def _binding() -> Any:
    if _rados_module is None:
        raise BackupConfigError(INSTALL_HINT)
    return _rados_module


def _seconds(value: float) -> str:
    """Ceph's timeout options take whole seconds."""
    return str(max(1, math.ceil(value)))


@dataclass(frozen=True, slots=True)
class RadosOptions:
    """Which pool, as which client, with which limits. ``key`` is a secret: left out of the repr."""

    pool: str
    conf: str | None = None
    client_id: str = "admin"
    keyring: str | None = None
    key: str | None = field(default=None, repr=False)
    prefix: str = ""
    uploads: int = DEFAULT_UPLOADS
    osd_op_timeout: float = DEFAULT_OSD_OP_TIMEOUT
    mon_op_timeout: float = DEFAULT_MON_OP_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: StoreRetry = DEFAULT_RETRY

    def __post_init__(self) -> None:
        if not self.pool or "/" in self.pool:
            raise BackupConfigError(f"rados store: {self.pool!r} is not a pool name")
        if not self.client_id or self.client_id.startswith("client.") or any(c.isspace() for c in self.client_id):
            raise BackupConfigError(f"rados store: id must be the client's id as `rados --id` takes it (e.g. 'backup'"
                                    f" for client.backup), got {self.client_id!r}")
        if self.uploads < 1:
            raise BackupConfigError(f"rados store: uploads must be >= 1, got {self.uploads}")

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RadosOptions:
        """``rados://POOL[/PREFIX][?conf=PATH&id=CLIENT&keyring=PATH&…]``; the cephx ``key`` belongs in ``store_options``."""
        one_host = settings.url is not None and len(settings.url.hosts) == 1 and settings.port is None
        if settings.username or settings.password:
            raise BackupConfigError("rados store URL takes no USER:KEY@: the client is id=CLIENT, its key comes"
                                    " from the conf's keyring, the keyring option or key in store_options")
        if settings.scheme != "rados" or not one_host:
            raise BackupConfigError(f"rados store URL must look like rados://POOL?conf=PATH&id=CLIENT, got {settings.location}")
        prefix = settings.take_str("prefix", settings.path.strip("/")) or ""
        return cls(
            pool=settings.host or "",
            conf=settings.take_str("conf"),
            client_id=settings.take_str("id", "admin") or "",
            keyring=settings.take_str("keyring"),
            key=settings.take_secret("key"),
            prefix=prefix.strip("/"),
            uploads=settings.take_int("uploads", DEFAULT_UPLOADS),
            osd_op_timeout=settings.take_duration("rados_osd_op_timeout", DEFAULT_OSD_OP_TIMEOUT, above=True),
            mon_op_timeout=settings.take_duration("rados_mon_op_timeout", DEFAULT_MON_OP_TIMEOUT, above=True),
            connect_timeout=settings.take_duration("rados_connect_timeout", DEFAULT_CONNECT_TIMEOUT, above=True),
            retry=settings.take_retry(DEFAULT_RETRY),
        )

    def client_conf(self) -> dict[str, str]:
        """What librados is configured with over the conf file: the bounds, the key material,
        and quiet stderr (librados' own complaints would bury the one clear error)."""
        conf = {"rados_osd_op_timeout": _seconds(self.osd_op_timeout),
                "rados_mon_op_timeout": _seconds(self.mon_op_timeout),
                "client_mount_timeout": _seconds(self.connect_timeout),
                "log_to_stderr": "false", "err_to_stderr": "false"}
        if self.keyring:
            conf["keyring"] = self.keyring
        if self.key:
            conf["key"] = self.key
        return conf


class RadosObjectStore:
    """The ObjectStore protocol on one RADOS pool; used between ``open()`` and ``aclose()``."""

    name = "rados"

    def __init__(self, options: RadosOptions) -> None:
        self.options = options
        self._cluster: _Cluster | None = None
        self._ioctxs: dict[str, _Ioctx] = {}
        self._ioctx_lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop that uses it
        # Bytes a read asks for: above the largest object read so far (a benign race between threads).
        self._read_bound = FIRST_READ_BOUND

    @property
    def _threads(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(MAX_THREADS)
        return self._limiter

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RadosObjectStore:
        _binding()
        return cls(RadosOptions.from_settings(settings))

    @property
    def default_uploads(self) -> int:
        return self.options.uploads

    @property
    def location(self) -> str:
        """The pool (and prefix): not the conf path, which differs between hosts of one cluster."""
        return f"rados://{self.options.pool}" + (f"/{self.options.prefix}" if self.options.prefix else "")

    @property
    def _who(self) -> str:
        conf = self.options.conf or "the default ceph.conf"
        return f"client.{self.options.client_id} ({conf})"

    def __repr__(self) -> str:
        return f"RadosObjectStore({self.location!r}, id={self.options.client_id!r})"

    # -- connecting -------------------------------------------------------------------

    def _connect_blocking(self) -> None:
        """Read the conf, connect within ``rados_connect_timeout``, check the pool exists."""
        binding = _binding()
        opts = self.options
        if self._cluster is not None:
            return
        try:
            cluster = cast(_Cluster, binding.Rados(rados_id=opts.client_id, conffile=opts.conf or "",
                                                   conf=opts.client_conf()))
        except binding.Error as exc:
            if opts.conf and getattr(exc, "errno", None) == errno.ENOENT:
                raise PermanentObjectStoreError(f"rados store: cannot read conf {opts.conf!r}: no such file") from None
            raise PermanentObjectStoreError(f"rados store: invalid client configuration for {self._who}:"
                                            f" {_reason(exc)}") from None
        try:
            try:
                cluster.connect()
            except binding.Error as exc:
                raise self._connect_error(exc, f"rados: cannot connect as {self._who}") from None
            try:
                cluster.open_ioctx(opts.pool).close()
            except binding.Error as exc:
                raise self._pool_error(exc, f"rados: cannot open pool {opts.pool!r} as {self._who}") from None
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster = cluster

    def _connect_error(self, exc: Exception, where: str) -> ObjectStoreError:
        code = getattr(exc, "errno", None)
        if code in _DENIED:
            return PermanentObjectStoreError(f"{where}: access denied ({_reason(exc)}): check the key or keyring of"
                                             f" client.{self.options.client_id}")
        if code == errno.ENOENT:
            return PermanentObjectStoreError(f"{where}: {_reason(exc)}: no monitor address or no keyring for"
                                             f" client.{self.options.client_id} found (conf, keyring or key option)")
        if code == errno.EINVAL:
            return PermanentObjectStoreError(f"{where}: {_reason(exc)}: check the key (base64 cephx secret) and conf")
        if code == errno.ETIMEDOUT:
            return TransientObjectStoreError(f"no monitor answered within rados_connect_timeout ({_reason(exc)})")
        return self._failure(exc, where) or PermanentObjectStoreError(f"{where}: {_reason(exc)}")

    def _pool_error(self, exc: Exception, where: str) -> ObjectStoreError:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return PermanentObjectStoreError(f"{where}: the pool does not exist (ceph osd pool create {self.options.pool})")
        return self._failure(exc, where) or PermanentObjectStoreError(f"{where}: {_reason(exc)}")

    async def open(self) -> None:
        await self.options.retry.call(
            "rados", "connect", f"to pool {self.options.pool!r} as {self._who}",
            lambda: anyio.to_thread.run_sync(self._connect_blocking, limiter=self._threads),
            classify=self._failure)

    def _close_blocking(self) -> None:
        with self._ioctx_lock:
            ioctxs, self._ioctxs = list(self._ioctxs.values()), {}
        for ioctx in ioctxs:
            ioctx.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.shutdown()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close_blocking, limiter=self._threads)
        self._limiter = None

    # -- plumbing -----------------------------------------------------------------------

    def _namespace(self, container: str) -> str:
        validate_name("container", container)
        return f"{self.options.prefix}/{container}" if self.options.prefix else container

    def _ioctx(self, container: str) -> _Ioctx:
        """One I/O context per backup namespace (a namespace is per-context state, so
        contexts are not shared between namespaces; one is safe to use from many threads)."""
        namespace = self._namespace(container)
        with self._ioctx_lock:
            ioctx = self._ioctxs.get(namespace)
            if ioctx is None:
                if self._cluster is None:
                    raise PermanentObjectStoreError("rados store used before open()")
                ioctx = self._cluster.open_ioctx(self.options.pool)
                ioctx.set_namespace(namespace)
                self._ioctxs[namespace] = ioctx
            return ioctx

    def _forget(self, container: str) -> None:
        with self._ioctx_lock:
            ioctx = self._ioctxs.pop(self._namespace(container), None)
        if ioctx is not None:
            ioctx.close()

    def _failure(self, exc: Exception, where: str) -> ObjectStoreError | None:
        """librados' errors by errno; TransientObjectStoreError is what the retry loop tries again."""
        if _rados_module is None or not isinstance(exc, _rados_module.Error):
            return None
        code = getattr(exc, "errno", None)
        reason = _reason(exc)
        if code == errno.ENOENT:
            return ObjectNotFoundError(f"{where}: object not found")
        if code in _DENIED:
            return PermanentObjectStoreError(f"{where}: access denied ({reason}): check the caps of {self._who}"
                                             f" on pool {self.options.pool!r}")
        if code in _FULL:
            return ObjectStoreFullError(f"{where}: the pool is full or over its quota ({reason})")
        if code in _TOO_BIG:
            return PermanentObjectStoreError(f"{where}: object too large for the OSDs ({reason}): use a chunk_size"
                                             " below osd_max_write_size")
        if code in _TRANSIENT or isinstance(exc, _rados_module.TimedOut):
            return TransientObjectStoreError(reason)
        return PermanentObjectStoreError(f"{where}: {reason}")

    async def _call(self, action: str, what: str, fn: Callable[[], _T]) -> _T:
        """``fn()`` in a worker thread under the store's retry policy, failures mapped."""
        return await self.options.retry.call(
            "rados", action, what, lambda: anyio.to_thread.run_sync(fn, limiter=self._threads),
            classify=self._failure)

    def _where(self, container: str, name: str | None = None) -> str:
        where = f"{self.options.pool}/{self._namespace(container)}"
        return f"{where}/{name}" if name is not None else where

    # -- blocking calls (worker threads) ----------------------------------------------------

    def _get(self, container: str, name: str) -> bytes:
        """One round trip: a read of ``_read_bound`` bytes. A RADOS read stops short only at
        the object's end, so fewer bytes are the whole object; as many may be a prefix, so
        then the size is asked for and the rest read (and the bound raised for the next reads)."""
        ioctx = self._ioctx(container)
        bound = self._read_bound
        data = ioctx.read(name, bound, 0)
        if len(data) < bound:
            return data
        size, _ = ioctx.stat(name)
        if size > len(data):
            data += ioctx.read(name, size - len(data), len(data))
        if len(data) != size:  # rewritten between the calls: read it again
            raise TransientObjectStoreError(f"read {len(data)} of the object's {size} bytes")
        self._read_bound = max(self._read_bound, min(1 << size.bit_length(), MAX_READ_BOUND))
        return data

    def _delete(self, container: str, name: str) -> None:
        try:
            self._ioctx(container).remove_object(name)
        except _binding().ObjectNotFound:
            pass  # already gone (or removed by an earlier, retried attempt): done

    def _list(self, container: str) -> list[str]:
        objects: Iterator[Any] = iter(self._ioctx(container).list_objects())
        return sorted(str(obj.key) for obj in objects)

    # -- ObjectStore --------------------------------------------------------------------------

    async def create_container(self, container: str) -> None:
        """A backup's namespace needs no creating: its first object makes it."""
        await self._call("open namespace", self._where(container), lambda: self._ioctx(container))

    async def delete_container(self, container: str) -> None:
        left = await self.list_objects(container)
        if left:
            raise PermanentObjectStoreError(f"rados: cannot delete {self._where(container)}: {len(left)} object(s) left")
        await anyio.to_thread.run_sync(self._forget, container, limiter=self._threads)

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        validate_name("object", name)
        await self._call("store object", self._where(container, name),
                         lambda: self._ioctx(container).write_full(name, data))

    async def get_object(self, container: str, name: str) -> bytes:
        validate_name("object", name)
        return await self._call("read object", self._where(container, name), lambda: self._get(container, name))

    async def delete_object(self, container: str, name: str) -> None:
        validate_name("object", name)
        await self._call("delete object", self._where(container, name), lambda: self._delete(container, name))

    async def list_objects(self, container: str) -> list[str]:
        return await self._call("list", self._where(container), lambda: self._list(container))

    async def sync_container(self, container: str) -> None:
        """Nothing to do: RADOS acknowledges a write once every replica has it."""


def _reason(exc: BaseException) -> str:
    """librados' own message (``[errno 13] RADOS permission denied (…)``): errno and the call,
    never the key or the conf's contents."""
    return str(exc) or type(exc).__name__
