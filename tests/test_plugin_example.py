"""The third-party plugin example in examples/plugin, installed with pip like a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pip_installed_plugin_delivers_over_udp(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "examples" / "plugin")],
        check=True, capture_output=True, timeout=300,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(30)
        port = receiver.getsockname()[1]
        code = textwrap.dedent(f"""
            import anyio
            from notifykit import Notifier
            from notifykit.transport import installed_schemes
            assert "syslog" in installed_schemes()

            async def main():
                async with Notifier.from_url("syslog://127.0.0.1:{port}?facility=16", publisher_id="backup.h",
                                             dead_letters={str(tmp_path / 'dl.jsonl')!r}) as n:
                    await n.error({{}}, "backup.create.error", {{"fail_reason": "disk full"}})
                print(n.stats()["syslog"].sent)

            anyio.run(main)
        """)
        env = dict(os.environ, PYTHONPATH=f"{target}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1"
        datagram = receiver.recv(65536).decode()
    assert datagram.startswith("<131>1 ")  # facility 16 * 8 + severity 3 (error)
    assert " backup.create.error - " in datagram and '"fail_reason":"disk full"' in datagram


def test_plugin_rejects_unknown_option(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples" / "plugin"))
    try:
        from notifykit_syslog import SyslogTransport

        from notifykit import ConfigError, WireFormat
        from notifykit.transport import TransportSettings, parse_url

        settings = TransportSettings.build("s", parse_url("syslog://h:1?colour=red"), WireFormat.JSON,
                                           ("notifications",), {"colour": "red"})
        try:
            SyslogTransport.from_settings(settings)
        except ConfigError as exc:
            assert "unknown option(s) colour" in str(exc)
        else:
            raise AssertionError("unknown option accepted")
    finally:
        sys.path.remove(str(ROOT / "examples" / "plugin"))
        sys.modules.pop("notifykit_syslog", None)
