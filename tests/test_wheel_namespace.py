"""The built wheel, installed in a fresh venv, next to a user's own ``backup.py`` and ``transports/``.

transports/ and backup/ install as ``notifykit.transports`` and ``notifykit.backup``, so a
script run from a directory holding modules of those common names still finds ours. The
user's modules here raise on import: any import of them is a failure, not a silent shadow.
The fresh venv takes third-party packages from the test venv through a path entry (no
download), and nothing of notifykit but the wheel.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from .amqp.support import BROKER_HOST, BROKER_PORT, Names, delete_all
from .helpers import require_tcp

ROOT = Path(__file__).resolve().parent.parent
SHADOW = 'raise ImportError("the user\'s own {name} was imported instead of notifykit\'s")\n'

PROBE = """
import json, sys
from importlib.metadata import entry_points
from pathlib import Path

import anyio
from notifykit import Notifier

found = {}
for group in ("notifykit.transports", "notifykit.backup.stores"):
    for ep in entry_points(group=group):
        cls = ep.load()
        found[f"{group}:{ep.name}"] = sys.modules[cls.__module__].__file__

async def main(urls):
    sent = {}
    for url in urls:
        async with Notifier.from_url(url, publisher_id="backup.wheel", dead_letters=sys.argv[1]) as n:
            await n.info({}, "backup.create.end", {"backup_id": "b-1", "url": url.split(":", 1)[0]})
        sent[url.split(":", 1)[0]] = sum(s.sent for s in n.stats().values())
    return sent

print(json.dumps({"files": found, "sent": anyio.run(main, sys.argv[2:])}))
"""


def _venv_with_wheel(tmp_path: Path) -> Path:
    """A fresh venv holding the wheel built from this checkout; its third-party packages come from ours."""
    source = tmp_path / "src"
    for name in ("notifykit", "transports", "backup"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("notifykit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(purelib) / "zz-test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


@pytest.mark.broker
def test_the_wheel_is_not_shadowed_by_a_users_backup_and_transports(tmp_path: Path) -> None:
    require_tcp(BROKER_HOST, BROKER_PORT, "RabbitMQ")
    venv = _venv_with_wheel(tmp_path)
    user = tmp_path / "user"
    (user / "transports").mkdir(parents=True)
    (user / "backup.py").write_text(SHADOW.format(name="backup.py"))
    (user / "transports" / "__init__.py").write_text(SHADOW.format(name="transports/"))
    (user / "probe.py").write_text(PROBE)
    events = tmp_path / "events.jsonl"
    names = Names.fresh()
    urls = ["memory://", f"log://{events}", f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/?exchange={names.exchange}"]
    try:
        probe = subprocess.run([str(venv / "bin" / "python"), "probe.py", str(tmp_path / "dl.jsonl"), *urls],
                               cwd=user, capture_output=True, text=True, timeout=120, check=False)
    finally:
        anyio.run(delete_all, names)
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    site_packages = str(venv / "lib")
    assert {key.split(":")[1] for key in result["files"]} >= {"memory", "log", "amqp", "amqps", "http", "https",
                                                               "kafka", "kafka+ssl", "file", "swift", "s3"}
    assert all(path.startswith(site_packages) for path in result["files"].values()), result["files"]
    assert result["sent"] == {"memory": 1, "log": 1, "amqp": 1}
    assert json.loads(events.read_text())["event_type"] == "backup.create.end"

    volume = user / "volume.img"
    volume.write_bytes(bytes(range(256)) * 4096)
    common = ["--catalog", str(tmp_path / "catalog.sqlite"), "--store", f"file://{tmp_path / 'store'}",
              "--notifier", f"log://{tmp_path / 'backup-events.jsonl'}"]
    backup = venv / "bin" / "notifykit-backup"
    created = subprocess.run([str(backup), "create", "volume.img", *common], cwd=user, capture_output=True,
                             text=True, timeout=120, check=False)
    assert created.returncode == 0, created.stderr
    backup_id = created.stdout.strip().splitlines()[-1]
    restored = subprocess.run([str(backup), "restore", backup_id, "restored.img", *common], cwd=user,
                              capture_output=True, text=True, timeout=120, check=False)
    assert restored.returncode == 0, restored.stderr
    assert (user / "restored.img").read_bytes() == volume.read_bytes()
    code = textwrap.dedent("""
        import notifykit.backup, sys
        assert notifykit.backup.__file__.startswith(sys.argv[1]), notifykit.backup.__file__
    """)
    check = subprocess.run([str(venv / "bin" / "python"), "-c", code, site_packages], cwd=user,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
