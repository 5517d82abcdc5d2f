"""The Swift store against a real Keystone and a Swift proxy that validates its tokens.

Every way of authenticating (password in the URL, application credential, an existing
token, the OS_* variables, OS_CLOUD with a clouds.yaml), a token revoked mid-way, wrong
credentials and a user without the Swift role. Nothing here is mocked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit.backup import BackupStatus, ObjectStoreError
from notifykit.backup._stores import store_from_url
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

from ..backup.helpers import CHUNK, backup_env

pytestmark = [pytest.mark.asyncio, pytest.mark.broker, pytest.mark.slow]

PASSWORD = "notifykit-backup-pw"


def keystone_url(keystone: Any, query: str = "", user: str = "backup", password: str = PASSWORD) -> str:
    host = keystone.auth_url.split("://", 1)[1].split("/", 1)[0]
    credentials = f"{user}:{password}@" if user else ""
    return f"swift://{credentials}{host}/v3{query}"


def application_credential(keystone: Any, name: str) -> tuple[str, str]:
    """A new application credential of user ``backup`` (made with the user's own token)."""
    token = keystone.token("backup", PASSWORD, "notifykit")
    user_id = keystone.ids["user:backup"]
    request = urllib.request.Request(
        f"{keystone.auth_url}/users/{user_id}/application_credentials", method="POST",
        data=json.dumps({"application_credential": {"name": name}}).encode(),
        headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = json.loads(resp.read())["application_credential"]
    return str(body["id"]), str(body["secret"])


async def round_trip(tmp_path: Path, store: Any) -> dict[str, Any]:
    """create + restore + delete through the service; the first notification's context."""
    await store.open()
    try:
        async with backup_env(tmp_path, store=store, uploads=4) as env:
            volume = env.volume(5 * CHUNK + 17)
            record = await env.service.create_backup(volume)
            await env.service.restore_backup(record.id, tmp_path / "restored.img")
            same = hashlib.sha256((tmp_path / "restored.img").read_bytes()).digest() == \
                hashlib.sha256(volume.read_bytes()).digest()
            deleted = await env.service.delete_backup(record.id)
        context = env.memory.messages[0].context  # complete once the notifier closed
    finally:
        await store.aclose()
    assert record.status is BackupStatus.AVAILABLE and same and deleted.status is BackupStatus.DELETED
    return dict(context.as_dict())


async def test_password_in_the_url_and_the_context_carries_keystones_ids(tmp_path: Path, keystone: Any) -> None:
    store = SwiftObjectStore(SwiftOptions.from_url(keystone_url(keystone, "?project=notifykit")))
    context = await round_trip(tmp_path, store)
    assert context["user_id"] == keystone.ids["user:backup"]
    assert context["project_id"] == keystone.ids["project"]


async def test_application_credential_by_id_and_by_name(tmp_path: Path, keystone: Any) -> None:
    cred_id, secret = application_credential(keystone, "nk-by-id")
    url = keystone_url(keystone, f"?application_credential_id={cred_id}&application_credential_secret={secret}",
                       user="")
    await round_trip(tmp_path / "id", SwiftObjectStore(SwiftOptions.from_url(url)))
    _, secret2 = application_credential(keystone, "nk-by-name")
    options = SwiftOptions.from_url(keystone_url(keystone, user=""), {
        "application_credential_name": "nk-by-name", "application_credential_secret": secret2, "user": "backup"})
    context = await round_trip(tmp_path / "name", SwiftObjectStore(options))
    assert context["project_id"] == keystone.ids["project"]
    assert secret not in repr(options) and secret2 not in repr(options)


async def test_an_existing_token(tmp_path: Path, keystone: Any) -> None:
    token = keystone.token("backup", PASSWORD, "notifykit")
    options = SwiftOptions.from_url(keystone_url(keystone, user=""), {"token": token, "project": "notifykit"})
    assert token not in repr(options)
    await round_trip(tmp_path, SwiftObjectStore(options))


async def test_the_os_variables(tmp_path: Path, keystone: Any) -> None:
    env = {"OS_AUTH_URL": keystone.auth_url, "OS_USERNAME": "backup", "OS_PASSWORD": PASSWORD,
           "OS_PROJECT_NAME": "notifykit", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
           "OS_REGION_NAME": "RegionOne", "OS_INTERFACE": "internal"}
    store = store_from_url("swift://", env=env)
    assert isinstance(store, SwiftObjectStore) and store.options.keystone is not None
    assert store.options.keystone.interface == "internal" and PASSWORD not in repr(store)
    await round_trip(tmp_path, store)


async def test_os_cloud_and_clouds_yaml(tmp_path: Path, keystone: Any) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"""clouds:
  backups:
    region_name: RegionOne
    auth:
      auth_url: {keystone.auth_url}
      username: backup
      project_name: notifykit
      user_domain_name: Default
      project_domain_name: Default
""")
    (tmp_path / "secure.yaml").write_text(f"clouds:\n  backups:\n    auth:\n      password: {PASSWORD}\n")
    env = {"OS_CLOUD": "backups", "OS_CLIENT_CONFIG_FILE": str(clouds)}
    await round_trip(tmp_path / "env", store_from_url("swift://", env=env))
    options = {"cloud": "backups"}
    await round_trip(tmp_path / "option", store_from_url("swift://", options, env={"OS_CLIENT_CONFIG_FILE": str(clouds)}))


async def test_a_revoked_token_is_renewed_once_and_the_request_retried(keystone: Any) -> None:
    store = SwiftObjectStore(SwiftOptions.from_url(keystone_url(keystone, "?project=notifykit")))
    await store.open()
    try:
        await store.create_container("backup_renew")
        await store.put_object("backup_renew", "one", b"1")
        session = store._session
        assert session is not None
        admin = keystone.admin_token()
        revoke = urllib.request.Request(f"{keystone.auth_url}/auth/tokens", method="DELETE",
                                        headers={"X-Auth-Token": admin, "X-Subject-Token": session.token})
        with await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(revoke, timeout=30)) as resp:
            assert resp.status == 204
        await anyio.sleep(2.5)  # the proxy trusts a validated token for 2 s (authtoken's token_cache_time)
        await store.put_object("backup_renew", "two", b"22")  # 401 → one new token → retried
        names = await store.list_objects("backup_renew")
        assert store._session is not None and store._session.token != session.token
        for name in names:
            await store.delete_object("backup_renew", name)
        await store.delete_container("backup_renew")
    finally:
        await store.aclose()
    assert names == ["one", "two"]


async def test_a_wrong_password_is_one_line_naming_the_url_and_user(tmp_path: Path, keystone: Any,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-pw-s3cr3t"
    caplog.set_level(logging.DEBUG)
    store = SwiftObjectStore(SwiftOptions.from_url(keystone_url(keystone, "?project=notifykit&retry_backoff=0.01",
                                                                password=secret)))
    with pytest.raises(ObjectStoreError) as raised:
        await store.open()
    await store.aclose()
    message = str(raised.value)
    assert keystone.auth_url in message and "'backup'" in message and "401" in message
    assert "\n" not in message
    assert secret not in message and secret not in caplog.text and secret not in repr(store)


async def test_a_user_without_the_swift_role_gets_a_named_permanent_403(tmp_path: Path, keystone: Any) -> None:
    url = keystone_url(keystone, "?project=notifykit&retry_backoff=0.01", user="reader",
                       password="notifykit-reader-pw")
    store = SwiftObjectStore(SwiftOptions.from_url(url))
    await store.open()  # Keystone accepts the user: Swift refuses the role
    try:
        async with backup_env(tmp_path, store=store, uploads=1) as env:
            with pytest.raises(ObjectStoreError, match="403 Forbidden") as raised:
                await env.service.create_backup(env.volume(CHUNK))
            record = (await env.service.list())[0]
    finally:
        await store.aclose()
    assert "reader" in str(raised.value) and "operator role" in str(raised.value)
    assert record.status is BackupStatus.ERROR and "403" in (record.fail_reason or "")
