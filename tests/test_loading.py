"""Transports are found through stevedore entry points, including third-party ones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from notifykit import Notifier, UnknownTransportError
from notifykit._loading import install_hint
from notifykit.transport import installed_schemes, load_transport_class


def test_unknown_scheme_lists_installed() -> None:
    with pytest.raises(UnknownTransportError) as err:
        Notifier.from_url("carrierpigeon://coop", publisher_id="x")
    message = str(err.value)
    assert "unknown transport scheme 'carrierpigeon'" in message
    assert "memory" in message and "log" in message


def test_builtin_schemes_registered() -> None:
    assert {"memory", "log"} <= set(installed_schemes())
    assert load_transport_class("memory").__name__ == "MemoryTransport"


def write_plugin(root: Path, dist: str, scheme: str, module: str, source: str, requires: tuple[str, ...] = ()) -> None:
    """A distribution 'installed' the way pip lays one out: a module plus its dist-info."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    requirements = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n{requirements}")
    (info / "entry_points.txt").write_text(f"[notifykit.transports]\n{scheme} = {module}:Transport_\n")


def run_python(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as an application that has the plugin installed would be."""
    env = dict(os.environ, PYTHONPATH=f"{path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_third_party_transport_is_picked_up(tmp_path: Path) -> None:
    write_plugin(tmp_path, "pigeon_transport", "pigeon", "pigeon_transport", """
        from notifykit.transport import Transport

        DELIVERED = []

        class Transport_(Transport):
            async def send(self, batch):
                DELIVERED.extend(n.event_type for n in batch)
    """)
    result = run_python(f"""
        import anyio, sys
        import notifykit, notifykit.transport
        assert "pigeon" in notifykit.transport.installed_schemes()

        async def main():
            async with notifykit.Notifier.from_url("pigeon://coop", publisher_id="x",
                                                   dead_letters={str(tmp_path / 'dl.jsonl')!r}) as n:
                await n.info({{}}, "backup.create.start", {{"ok": True}})
            print(sys.modules["pigeon_transport"].DELIVERED, n.stats()["pigeon"].sent)

        anyio.run(main)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['backup.create.start'] 1"


def test_plugin_with_missing_dependency_is_a_clear_error(tmp_path: Path) -> None:
    write_plugin(tmp_path, "broken_transport", "broken", "broken_transport",
                 "import a_module_that_is_not_installed_xyz\n")
    result = run_python("""
        import notifykit
        try:
            notifykit.Notifier.from_url("broken://x", publisher_id="x")
        except notifykit.ConfigError as exc:
            print(exc)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "transport 'broken' is installed but cannot import 'a_module_that_is_not_installed_xyz'" in result.stdout


def test_a_new_transports_missing_dependency_hint_comes_from_its_own_metadata(tmp_path: Path) -> None:
    """Adding a transport (here a NATS one) needs no edit in the core, not even for the install hint."""
    write_plugin(tmp_path, "notifykit_nats", "nats", "notifykit_nats", "import nats_xyz_client\n",
                 requires=("notifykit", "nats-xyz-client>=2.6", 'nats-xyz-client[nkeys]>=2.6; extra == "nkeys"'))
    result = run_python("""
        import notifykit
        try:
            notifykit.Notifier.from_url("nats://127.0.0.1:4222/", publisher_id="x")
        except notifykit.MissingDependencyError as exc:
            print(exc)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("transport 'nats' is installed but cannot import 'nats_xyz_client'; "
                                     "install it with: pip install 'nats-xyz-client>=2.6'")


def test_a_builtin_transports_hint_names_its_extra() -> None:
    from importlib.metadata import entry_points

    from notifykit._loading import install_hint

    [amqp] = [ep for ep in entry_points(group="notifykit.transports") if ep.name == "amqp"]
    assert install_hint(amqp, "aio_pika") == "; install it with: pip install 'notifykit[amqp]'"
    [kafka] = [ep for ep in entry_points(group="notifykit.transports") if ep.name == "kafka"]
    assert install_hint(kafka, "aiokafka.producer") == "; install it with: pip install 'notifykit[kafka]'"


def test_a_plugin_option_named_like_a_core_key_is_refused_at_load(tmp_path: Path) -> None:
    """Reproduction: a transport taking ``batch_size`` never received it (the core consumes
    ``?batch_size=`` from the URL itself) and silently ran with its own default."""
    write_plugin(tmp_path, "clash_transport", "clash", "clash_transport", """
        from dataclasses import dataclass
        from notifykit.transport import Transport

        @dataclass(frozen=True)
        class Options:
            batch_size: int

            @classmethod
            def from_settings(cls, settings):
                return cls(settings.take_int("batch_size", 10))

        class Transport_(Transport):
            Options = Options

            async def send(self, batch):
                pass
    """)
    result = run_python("""
        import notifykit
        try:
            notifykit.Notifier.from_url("clash://h?batch_size=5", publisher_id="x")
        except notifykit.ConfigError as exc:
            print(exc)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("option 'batch_size' of transport 'clash' (clash://h) is named like a core"
                                     " setting the plugin never receives; the plugin must call it something else")


def test_the_core_url_keys_are_the_config_dataclasses_fields() -> None:
    """One source of truth: the keys the core takes from a URL (and so reserves) come from the
    fields of TransportConfig and its policies, not from a list kept by hand."""
    from dataclasses import fields

    from notifykit import CircuitPolicy, Filter, RetryPolicy, TransportConfig
    from notifykit._loading import CORE_URL_KEYS

    scalars = {f.name for f in fields(TransportConfig)} - {"url", "options", "filter", "retry", "circuit"}
    assert CORE_URL_KEYS == (scalars | {"topic"} | {f.name for f in fields(Filter)}
                             | {f"retry_{f.name}" for f in fields(RetryPolicy)}
                             | {f"circuit_{f.name}" for f in fields(CircuitPolicy)})
    assert "batch_size" in CORE_URL_KEYS and "retry_max_elapsed" in CORE_URL_KEYS


def test_an_extra_named_like_the_plugin_wins_the_install_hint(tmp_path: Path) -> None:
    """httpx comes with notifykit's webhook extra and its swift extra: the swift store's hint names swift."""
    from importlib.metadata import PathDistribution

    info = tmp_path / "notifykit-9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: notifykit\nVersion: 9\n"
                                   'Requires-Dist: httpx[http2]>=0.27; extra == "webhook"\n'
                                   'Requires-Dist: notifykit[backup]; extra == "swift"\n'
                                   'Requires-Dist: httpx>=0.27; extra == "swift"\n'
                                   'Requires-Dist: obstore>=0.8; extra == "s3"\n')
    dist = PathDistribution(info)

    def hint(name: str, value: str, group: str, missing: str) -> str:
        ep = EntryPoint(name, value, group)._for(dist)  # type: ignore[attr-defined]
        return install_hint(ep, missing)

    assert hint("swift+https", "notifykit.backup._swift:SwiftObjectStore", "notifykit.backup.stores", "httpx") \
        == "; install it with: pip install 'notifykit[swift]'"
    assert hint("https", "notifykit.transports.webhook:WebhookTransport", "notifykit.transports", "httpx") \
        == "; install it with: pip install 'notifykit[webhook]'"
    assert hint("s3", "notifykit.backup._s3:S3ObjectStore", "notifykit.backup.stores", "obstore.store") \
        == "; install it with: pip install 'notifykit[s3]'"
