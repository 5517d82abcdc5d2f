"""Transports are found through stevedore entry points, including third-party ones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from notifykit import Notifier, UnknownTransportError
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
