"""What an object-store or catalog author imports: the protocols, the store settings and retry.

A store is one module — a class with ``from_settings(settings: StoreSettings)`` and the
:class:`ObjectStore` methods — plus one entry point in the ``notifykit.backup.stores``
group. It is a plugin of the same kind as a transport (``notifykit.plugin``): the same
loader (the install hint for a missing dependency comes from the store's own distribution),
the same URL parser and option checks, and the core calls ``settings.finish()`` after
``from_settings``. Network stores retry through :class:`StoreRetry`
(``settings.take_retry(defaults)`` gives ``retry_attempts`` / ``retry_backoff`` for free).
See docs/plugins.md.
"""

from ._catalog import BackupCatalog, BackupRecord, BackupStatus
from ._driver import BackupDriver, BackupResult, ObjectCallback
from ._errors import (
    BackupConfigError,
    CorruptBackupError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreFullError,
    PermanentObjectStoreError,
    TransientObjectStoreError,
)
from ._objectstore import ObjectDigests, ObjectStore, validate_name
from ._retry import StoreRetry
from ._stores import NAMESPACE, StoreFactory, StoreSettings, installed_stores, load_store_class, store_from_url

__all__ = [
    "NAMESPACE",
    "BackupCatalog",
    "BackupConfigError",
    "BackupDriver",
    "BackupRecord",
    "BackupResult",
    "BackupStatus",
    "CorruptBackupError",
    "ObjectCallback",
    "ObjectDigests",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreFullError",
    "PermanentObjectStoreError",
    "StoreFactory",
    "StoreRetry",
    "StoreSettings",
    "TransientObjectStoreError",
    "installed_stores",
    "load_store_class",
    "store_from_url",
    "validate_name",
]
