"""Keystone authentication for the Swift store, through keystoneauth1.

keystoneauth1 does what the ``openstack`` CLI does: v3 password, application credential or
token auth, then the ``object-store`` endpoint from the catalog by region and interface. Its
calls block (requests), so they run in a worker thread; the data path stays on httpx with
the token it hands out. Credentials come from the store URL and options, else from the
``clouds.yaml`` entry ``OS_CLOUD`` (or the ``cloud`` option) names, else from the ``OS_*``
variables. Secrets never appear in reprs or errors.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._errors import BackupConfigError, PermanentObjectStoreError, TransientObjectStoreError

__all__ = ["CLOUDS_YAML_PATHS", "KeystoneCredentials", "KeystoneSession"]

#: Where the openstack CLI looks for clouds.yaml, first match wins (OS_CLIENT_CONFIG_FILE before these).
CLOUDS_YAML_PATHS = (Path("clouds.yaml"), Path("~/.config/openstack/clouds.yaml"), Path("/etc/openstack/clouds.yaml"))
_SECRETS = {"password", "application_credential_secret", "token"}


@dataclass(frozen=True, slots=True)
class KeystoneCredentials:
    """Who to authenticate as, and which endpoint to use. Secrets are left out of the repr."""

    auth_url: str
    username: str | None = None
    user_id: str | None = None
    password: str | None = field(default=None, repr=False)
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region_name: str | None = None
    interface: str = "public"
    source: str = "the store URL"

    @property
    def method(self) -> str:
        """``application_credential``, ``token`` or ``password``."""
        if self.application_credential_secret:
            return "application_credential"
        return "token" if self.token else "password"

    @property
    def who(self) -> str:
        """The non-secret identity, for messages."""
        if self.method == "application_credential":
            return f"application credential {self.application_credential_id or self.application_credential_name!r}"
        if self.method == "token":
            return "the given token"
        return f"user {self.username or self.user_id!r}"

    def check(self) -> None:
        """One error naming what is missing, and where the credentials came from."""
        where = f"Keystone credentials from {self.source}"
        if not self.auth_url:
            raise BackupConfigError(f"{where}: no auth URL (OS_AUTH_URL, or auth_url in clouds.yaml)")
        if self.method == "application_credential":
            if not (self.application_credential_id or (self.application_credential_name
                                                        and (self.username or self.user_id))):
                raise BackupConfigError(f"{where}: an application credential needs its id, or its name and the user")
        elif self.method == "password":
            if not (self.username or self.user_id) or not self.password:
                raise BackupConfigError(f"{where}: password auth needs a user and a password (or an application"
                                        " credential id and secret, or a token)")
            if not (self.project_name or self.project_id):
                raise BackupConfigError(f"{where}: password auth needs a project (project / OS_PROJECT_NAME)")
        if self.interface not in ("public", "internal", "admin"):
            raise BackupConfigError(f"{where}: interface must be public, internal or admin, got {self.interface!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str) -> KeystoneCredentials:
        known = {f.name for f in fields(cls)} - {"source"}
        picked = {k: str(v) for k, v in values.items() if k in known and v not in (None, "")}
        if "username" in picked and not (picked.get("user_domain_name") or picked.get("user_domain_id")):
            picked["user_domain_name"] = "Default"
        if picked.get("project_name") and not (picked.get("project_domain_name") or picked.get("project_domain_id")):
            picked["project_domain_name"] = "Default"
        return cls(**{"auth_url": "", **picked, "source": source})

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeystoneCredentials | None:
        """From ``OS_CLOUD`` (clouds.yaml) when set, else from the ``OS_*`` variables; None without either."""
        if env.get("OS_CLOUD"):
            return cls.from_cloud(env["OS_CLOUD"], env)
        if not env.get("OS_AUTH_URL"):
            return None
        values = {f.name: env.get(f"OS_{f.name.upper()}") for f in fields(cls)}
        values["project_name"] = values["project_name"] or env.get("OS_TENANT_NAME")
        values["interface"] = values["interface"] or "public"
        return cls.from_mapping(values, "the OS_* environment variables")

    @classmethod
    def from_cloud(cls, cloud: str, env: Mapping[str, str]) -> KeystoneCredentials:
        """The ``cloud`` entry of the first clouds.yaml found (secure.yaml beside it merged in)."""
        path = _clouds_yaml(env)
        if path is None:
            raise BackupConfigError(f"cloud {cloud!r}: no clouds.yaml found (OS_CLIENT_CONFIG_FILE, ./clouds.yaml,"
                                    " ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml)")
        entry = _read_cloud(path, cloud)
        secure = path.with_name("secure.yaml")
        if secure.is_file():
            extra = _read_cloud(secure, cloud, required=False)
            entry = {**entry, "auth": {**entry.get("auth", {}), **extra.get("auth", {})}}
        auth = entry.get("auth", {})
        if not isinstance(auth, Mapping):
            raise BackupConfigError(f"{path}: clouds.{cloud}.auth must be a mapping")
        values = {**auth, "region_name": entry.get("region_name"), "interface": entry.get("interface", "public")}
        return cls.from_mapping(values, f"cloud {cloud!r} in {path}")

    def with_overrides(self, **values: str | None) -> KeystoneCredentials:
        """Region and interface given beside the credentials (store options) win."""
        return replace(self, **{k: v for k, v in values.items() if v})


def _clouds_yaml(env: Mapping[str, str]) -> Path | None:
    candidates = [Path(env["OS_CLIENT_CONFIG_FILE"])] if env.get("OS_CLIENT_CONFIG_FILE") else []
    home = env.get("HOME")
    for path in CLOUDS_YAML_PATHS:
        text = str(path)
        candidates.append(Path(home, text[2:]) if text.startswith("~/") and home else path.expanduser())
    return next((p for p in candidates if p.is_file()), None)


def _read_cloud(path: Path, cloud: str, *, required: bool = True) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise BackupConfigError("reading clouds.yaml needs PyYAML: pip install 'notifykit[swift]'") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BackupConfigError(f"{path}: cannot read it: {type(exc).__name__}") from None
    entry = data.get("clouds", {}).get(cloud) if isinstance(data, dict) else None
    if entry is None:
        if not required:
            return {}
        names = ", ".join(sorted(data.get("clouds", {}))) if isinstance(data, dict) else ""
        raise BackupConfigError(f"{path}: no cloud {cloud!r} (clouds: {names or 'none'})")
    if not isinstance(entry, dict):
        raise BackupConfigError(f"{path}: clouds.{cloud} must be a mapping")
    return entry


class KeystoneSession:
    """A keystoneauth1 session for ``credentials``: token, endpoint and identity, fetched in a thread."""

    def __init__(self, credentials: KeystoneCredentials, timeout: float) -> None:
        credentials.check()
        self.credentials = credentials
        self.timeout = timeout
        self.user_id: str | None = None
        self.project_id: str | None = None
        self._lock = threading.Lock()
        self._session: Any = None

    def __repr__(self) -> str:
        return f"KeystoneSession({self.credentials.auth_url!r}, {self.credentials.who})"

    async def authenticate(self, *, renew: bool = False) -> tuple[str, str]:
        """(token, object-store endpoint); ``renew`` drops the cached token first (after a 401)."""
        return await anyio.to_thread.run_sync(self._authenticate, renew)

    def _plugin(self) -> Any:
        try:
            from keystoneauth1 import session as ks_session
            from keystoneauth1.identity import v3
        except ImportError:
            raise BackupConfigError("Keystone auth needs keystoneauth1: pip install 'notifykit[swift]'") from None
        c = self.credentials
        if c.method == "application_credential":
            auth: Any = v3.ApplicationCredential(
                auth_url=c.auth_url, application_credential_id=c.application_credential_id,
                application_credential_name=c.application_credential_name,
                application_credential_secret=c.application_credential_secret or "", username=c.username,
                user_id=c.user_id, user_domain_name=c.user_domain_name, user_domain_id=c.user_domain_id)
        elif c.method == "token":
            auth = v3.Token(auth_url=c.auth_url, token=c.token or "", project_name=c.project_name,
                            project_id=c.project_id, project_domain_name=c.project_domain_name,
                            project_domain_id=c.project_domain_id)
        else:
            auth = v3.Password(auth_url=c.auth_url, username=c.username, user_id=c.user_id, password=c.password or "",
                               user_domain_name=c.user_domain_name, user_domain_id=c.user_domain_id,
                               project_name=c.project_name, project_id=c.project_id,
                               project_domain_name=c.project_domain_name, project_domain_id=c.project_domain_id)
        return ks_session.Session(auth=auth, timeout=self.timeout)

    def _authenticate(self, renew: bool) -> tuple[str, str]:
        from keystoneauth1 import exceptions as ks_exc

        c = self.credentials
        with self._lock:
            try:
                if self._session is None:
                    self._session = self._plugin()
                if renew:
                    self._session.invalidate()
                token = self._session.get_token()
                endpoint = self._session.get_endpoint(service_type="object-store", interface=c.interface,
                                                      region_name=c.region_name)
                self.user_id, self.project_id = self._session.get_user_id(), self._session.get_project_id()
            except ks_exc.EndpointNotFound:
                region = f" in region {c.region_name!r}" if c.region_name else ""
                raise PermanentObjectStoreError(f"keystone at {c.auth_url}: no {c.interface} object-store"
                                                f" endpoint{region} in the catalog of {c.who}") from None
            except ks_exc.Unauthorized:
                raise PermanentObjectStoreError(f"keystone at {c.auth_url} refused {c.who} (401): check the "
                                                f"{_secret_word(c)}") from None
            except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RetriableConnectionFailure,
                    ks_exc.DiscoveryFailure) as exc:
                raise TransientObjectStoreError(f"keystone at {c.auth_url} unreachable: {type(exc).__name__}") from None
            except ks_exc.HttpError as exc:
                status = getattr(exc, "http_status", None) or 0
                kind = TransientObjectStoreError if status >= 500 else PermanentObjectStoreError
                raise kind(f"keystone at {c.auth_url} answered {status} for {c.who}") from None
            except ks_exc.ClientException as exc:
                raise PermanentObjectStoreError(f"keystone at {c.auth_url}: {type(exc).__name__} for {c.who}") from None
        if not token or not endpoint:
            raise PermanentObjectStoreError(f"keystone at {c.auth_url} gave no token or endpoint for {c.who}")
        return str(token), str(endpoint)


def _secret_word(c: KeystoneCredentials) -> str:
    return {"application_credential": "application credential secret", "token": "token (expired or revoked?)",
            "password": "user name, domain and password"}[c.method]

