"""Object stores picked by URL through the ``notifykit.backup.stores`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from notifykit.backup import BackupConfig, BackupConfigError, UnknownStoreError, installed_stores
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._setup import build_driver
from notifykit.backup.cli import main
from notifykit.backup.plugin import (
    PermanentObjectStoreError,
    StoreRetry,
    StoreSettings,
    TransientObjectStoreError,
    store_from_url,
)

from .helpers import write_volume


def test_project_stores_are_registered() -> None:
    assert {"file", "swift", "swift+http", "swift+https"} <= set(installed_stores())


def test_plain_path_and_file_url_are_the_posix_store(tmp_path: Path) -> None:
    plain = store_from_url(str(tmp_path / "a"))
    url = store_from_url(f"file://{tmp_path / 'b'}?fsync=false")
    assert isinstance(plain, PosixObjectStore) and plain.fsync and plain.root == tmp_path / "a"
    assert isinstance(url, PosixObjectStore) and not url.fsync and url.root == tmp_path / "b"
    assert url.location == str(tmp_path / "b") and build_driver(BackupConfig(store=str(tmp_path))).uploads == 2
    with pytest.raises(BackupConfigError, match="not host 'elsewhere'"):
        store_from_url("file://elsewhere/srv/backups")


def test_unknown_scheme_is_one_error_naming_the_installed_stores(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction: a store URL of a scheme nobody registered used to become a relative
    posix directory, named after the URL and its secret key."""
    monkeypatch.chdir(tmp_path)
    volume = write_volume(tmp_path / "vol.img", 10_000)
    url = "nosuchstore+http://ACCESS:SECRETKEY@127.0.0.1:9/bucket"
    code = main(["create", str(volume), "--store", url, "--catalog", str(tmp_path / "c.sqlite3"),
                 "--notifier", f"log://{tmp_path / 'n.jsonl'}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "unknown object store scheme 'nosuchstore+http'" in err
    assert "installed stores are file, " in err and "swift" in err
    assert "SECRETKEY" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.img"]  # nothing written, no catalog either
    with pytest.raises(UnknownStoreError):
        BackupConfig(store=url)


def write_store_plugin(root: Path) -> None:
    """A third-party store 'installed' the way pip lays one out: a module plus its dist-info."""
    (root / "dict_store.py").write_text(textwrap.dedent("""
        from notifykit.backup.plugin import ObjectNotFoundError, StoreSettings

        class DictStore:
            name = "dict"
            default_uploads = 3

            def __init__(self, bucket, greeting):
                self.bucket, self.greeting = bucket, greeting
                self.objects, self.events = {}, []

            @classmethod
            def from_settings(cls, settings: StoreSettings) -> "DictStore":
                return cls(settings.host, settings.take_str("greeting", "hello"))

            @property
            def location(self):
                return f"dict://{self.bucket}"

            async def open(self):
                self.events.append("open")

            async def aclose(self):
                self.events.append("aclose")

            async def create_container(self, container):
                self.objects.setdefault(container, {})

            async def delete_container(self, container):
                if self.objects.pop(container, None) is None:
                    raise ObjectNotFoundError(container)

            async def put_object(self, container, name, data):
                self.objects[container][name] = bytes(data)

            async def get_object(self, container, name):
                try:
                    return self.objects[container][name]
                except KeyError:
                    raise ObjectNotFoundError(f"{container}/{name}") from None

            async def delete_object(self, container, name):
                self.objects[container].pop(name, None)

            async def list_objects(self, container):
                if container not in self.objects:
                    raise ObjectNotFoundError(container)
                return sorted(self.objects[container])

            async def sync_container(self, container):
                pass
    """))
    info = root / "dict_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dict-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[notifykit.backup.stores]\ndict = dict_store:DictStore\n")


def test_third_party_store_installed_by_entry_point_takes_a_round_trip(tmp_path: Path) -> None:
    write_store_plugin(tmp_path)
    write_volume(tmp_path / "vol.img", 50_000)
    code = f"""
        import anyio, sys
        from pathlib import Path
        from notifykit.backup import BackupConfig, BackupConfigError, installed_stores, open_backup_service
        from notifykit import Notifier

        root = Path({str(tmp_path)!r})
        assert "dict" in installed_stores()
        try:
            BackupConfig(store="dict://b1?colour=red")
        except BackupConfigError as exc:
            print("error:", exc)

        async def main():
            config = BackupConfig(store="dict://b1?greeting=hi", catalog_path=root / "c.sqlite3", chunk_size=16384,
                                  dead_letter_path=root / "dl.jsonl")
            async with Notifier.from_url("memory://", publisher_id="backup.t") as notifier:
                async with open_backup_service(config, notifier) as service:
                    store = service.driver.store
                    record = await service.create_backup(root / "vol.img")
                    objects = sum(len(v) for v in store.objects.values())
                    await service.restore_backup(record.id, root / "out.img")
                    await service.delete_backup(record.id)
                    print(type(store).__name__, store.greeting, record.service, objects, service.driver.uploads,
                          store.objects)
            print(store.events, (root / "out.img").read_bytes() == (root / "vol.img").read_bytes())

        anyio.run(main)
    """
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "error: dict store: unknown option(s) 'colour' (allowed: greeting)"
    assert lines[1] == "DictStore hi backup.drivers.dict 6 3 {}"  # 4 chunks + block list + metadata, then all deleted
    assert lines[2] == "['open', 'aclose'] True"


# -- one plugin toolkit for stores and transports ------------------------------------------


def test_retry_backoff_nan_is_refused() -> None:
    """Reproduction: the store settings parsed ``retry_backoff=nan`` as a float and the retry
    policy accepted it (``nan < 0`` is false), so every retry slept ``random.uniform(0, nan)``."""
    with pytest.raises(BackupConfigError, match=r"swift store: retry_backoff must be a duration.*got 'nan'"):
        store_from_url("swift://u:k@127.0.0.1:8080/auth/v1.0?retry_backoff=nan")
    with pytest.raises(BackupConfigError, match="retry_backoff must be a finite number"):
        StoreRetry(backoff=float("nan"))
    with pytest.raises(BackupConfigError, match=r"s3 store: timeout must be a finite number, got 'inf'"):
        store_from_url("s3://a:s@127.0.0.1:9000/bucket?timeout=inf")


@pytest.mark.parametrize(("value", "message"), [
    ("nan", "must be a finite number, got 'nan'"),
    ("1e999", "must be a finite number, got '1e999'"),
    ("soon", "must be a number, got 'soon'"),
    ("-1", "must be > 0, got -1"),
])
def test_stores_and_transports_check_an_option_with_the_same_words(value: str, message: str) -> None:
    """One parser: the same bad value fails the same way for a transport and for a store."""
    from notifykit import ConfigError, WireFormat
    from notifykit.transport import TransportSettings, parse_url

    transport = TransportSettings.build("t", parse_url("memory://"), WireFormat.JSON, ("n",), {"timeout": value})
    store = StoreSettings.parse(f"file:///tmp/x?timeout={value}")
    with pytest.raises(ConfigError) as from_transport:
        transport.take_float("timeout", 1.0, minimum=0, above=True)
    with pytest.raises(BackupConfigError) as from_store:
        store.take_float("timeout", 1.0, minimum=0, above=True)
    assert str(from_transport.value).endswith(message) and str(from_store.value).endswith(message)


def test_the_shared_vocabulary_durations_lists_and_secrets() -> None:
    settings = StoreSettings.parse("file:///tmp/x?wait=250ms&hosts=a,b&hosts=c&token=s3cr3t-value&n=x")
    assert settings.take_duration("wait", 1.0) == 0.25
    assert settings.take_list("hosts") == ["a", "b", "c"]
    assert settings.take_secret("token") == "s3cr3t-value"
    with pytest.raises(BackupConfigError) as err:
        settings.take_int("n", 1)
    assert "file store: n must be an integer, got 'x'" == str(err.value)
    settings.options["token2"] = ["not-a-number-secret"]
    settings.secrets.add("token2")
    with pytest.raises(BackupConfigError) as hidden:
        settings.take_int("token2", 1)
    assert "not-a-number-secret" not in str(hidden.value) and "token2 must be an integer" in str(hidden.value)
    assert "s3cr3t" not in repr(settings)


def test_one_url_parser_for_stores_too() -> None:
    """Store URLs go through the core's parser: several hosts are read (and refused by the S3
    store, which talks to one endpoint), and a malformed one is an error without its secret."""
    settings = StoreSettings.parse("s3://a:SECRETKEY@h1:9000,h2:9001/bucket")
    assert settings.netloc == "h1:9000,h2:9001" and settings.password == "SECRETKEY"
    assert "SECRETKEY" not in settings.location
    ipv6 = StoreSettings.parse("s3://a:SECRETKEY@[::1]:7480,[fe80::2]/bucket")
    assert ipv6.netloc == "[::1]:7480,[fe80::2]" and "SECRETKEY" not in ipv6.location
    with pytest.raises(BackupConfigError, match="s3 store URL must look like") as several:
        store_from_url("s3://a:SECRETKEY@h1:9000,h2:9001/bucket")
    with pytest.raises(BackupConfigError, match="store URL: malformed URL") as malformed:
        store_from_url("s3://a:SECRETKEY@h1:99999/bucket")
    assert "SECRETKEY" not in str(several.value) + str(malformed.value)


def test_store_retry_retries_transient_failures_only() -> None:
    calls: list[str] = []

    async def flaky() -> str:
        calls.append("flaky")
        if len(calls) < 3:
            raise TransientObjectStoreError("503 Service Unavailable")
        return "stored"

    async def refused() -> None:
        calls.append("refused")
        raise PermanentObjectStoreError("403 Forbidden")

    async def inner_gave_up() -> None:
        calls.append("outer")
        await StoreRetry(attempts=2, backoff=0).call("t", "authenticate", "at x", always_transient)

    async def always_transient() -> None:
        calls.append("inner")
        raise TransientObjectStoreError("timed out")

    async def main() -> None:
        retry = StoreRetry(attempts=3, backoff=0)
        assert await retry.call("t", "store object", "c/o", flaky) == "stored"
        with pytest.raises(PermanentObjectStoreError, match="403"):
            await retry.call("t", "store object", "c/o", refused)
        with pytest.raises(TransientObjectStoreError,
                           match=r"^t: cannot authenticate at x: timed out \(gave up after 2 attempt\(s\)\)$"):
            await retry.call("t", "store object", "c/o", inner_gave_up)

    anyio.run(main)
    # an inner call that already gave up is not tried again by the outer one
    assert calls == ["flaky"] * 3 + ["refused"] + ["outer", "inner", "inner"]


def write_flaky_store_plugin(root: Path) -> None:
    """A third-party store: one module and its dist-info, nothing else. It takes its options and
    retries with the toolkit; a second entry point of the same distribution needs a client
    library that is not installed, declared in an extra of its own."""
    (root / "flaky_store.py").write_text(textwrap.dedent("""
        from notifykit.backup.plugin import StoreRetry, StoreSettings, TransientObjectStoreError

        class FlakyStore:
            name = "flaky"
            default_uploads = 1

            def __init__(self, failures, retry):
                self.failures, self.retry, self.objects, self.attempts = failures, retry, {}, 0

            @classmethod
            def from_settings(cls, settings: StoreSettings) -> "FlakyStore":
                return cls(settings.take_int("failures", 0, minimum=0),
                           settings.take_retry(StoreRetry(attempts=4, backoff=0)))

            location = "flaky://"

            async def open(self): pass
            async def aclose(self): pass
            async def create_container(self, container): self.objects.setdefault(container, {})
            async def delete_container(self, container): self.objects.pop(container)
            async def get_object(self, container, name): return self.objects[container][name]
            async def delete_object(self, container, name): self.objects[container].pop(name, None)
            async def list_objects(self, container): return sorted(self.objects[container])
            async def sync_container(self, container): pass

            async def put_object(self, container, name, data):
                async def once():
                    self.attempts += 1
                    if self.attempts <= self.failures:
                        raise TransientObjectStoreError("503 Slow Down")
                    self.objects[container][name] = bytes(data)
                await self.retry.call("flaky", "store object", f"{container}/{name}", once)
    """))
    (root / "flaky_fast.py").write_text("import flaky_fast_client_xyz\n")
    info = root / "flaky_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-store\nVersion: 1.0\nRequires-Dist: notifykit\n"
                                   'Requires-Dist: flaky-fast-client-xyz>=1.2; extra == "fast"\n')
    (info / "entry_points.txt").write_text("[notifykit.backup.stores]\nflaky = flaky_store:FlakyStore\n"
                                           "flaky+fast = flaky_fast:FastStore\n")


def test_a_third_party_store_gets_checks_retry_and_install_hint_for_free(tmp_path: Path) -> None:
    write_flaky_store_plugin(tmp_path)
    code = """
        import anyio
        from notifykit.backup import BackupConfigError
        from notifykit.backup.plugin import store_from_url

        for url in ("flaky://?retry_backoff=nan", "flaky://?failures=-1", "flaky://?colour=red", "flaky+fast://"):
            try:
                store_from_url(url)
            except BackupConfigError as exc:
                print("error:", exc)

        async def main():
            store = store_from_url("flaky://?failures=2")
            await store.create_container("c")
            await store.put_object("c", "o", b"data")
            print("stored after", store.attempts, "attempts:", store.objects)
            tired = store_from_url("flaky://?failures=9&retry_attempts=2")
            await tired.create_container("c")
            try:
                await tired.put_object("c", "o", b"data")
            except Exception as exc:
                print(type(exc).__name__, exc)

        anyio.run(main)
    """
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "error: flaky store: retry_backoff must be a duration in seconds (30, 2.5s, 250ms, 5m, 1h), got 'nan'",
        "error: flaky store: failures must be >= 0, got -1",
        "error: flaky store: unknown option(s) 'colour' (allowed: failures, retry_attempts, retry_backoff)",
        "error: object store 'flaky+fast' is installed but cannot import 'flaky_fast_client_xyz';"
        " install it with: pip install 'flaky-store[fast]'",
        "stored after 3 attempts: {'c': {'o': b'data'}}",
        "TransientObjectStoreError flaky: cannot store object c/o: 503 Slow Down (gave up after 2 attempt(s))",
    ]
