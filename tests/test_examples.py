"""Every example in examples/ runs, and does what its docstring says."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          check=False, env=dict(os.environ))


def test_emit_example_prints_three_notifications() -> None:
    result = run(str(EXAMPLES / "emit.py"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count('"event_type":"backup.create') == 3  # start, createprogress, end
    assert "log: sent=3 dead_lettered=0" in result.stderr


def test_backup_example_round_trips_and_notifies(tmp_path: Path) -> None:
    volume = tmp_path / "volume.img"
    volume.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    out = tmp_path / "events.jsonl"
    result = run(str(EXAMPLES / "backup_with_notifications.py"), str(volume), str(tmp_path / "work"), f"log://{out}")
    assert result.returncode == 0, result.stderr
    assert "restored identical=True" in result.stdout
    events = [line for line in out.read_text().splitlines()]
    assert '"event_type":"backup.create.start"' in events[0]
    assert any('"event_type":"backup.delete.end"' in e for e in events)
    assert sum('"backup.createprogress"' in e for e in events) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> tuple[int, subprocess.Popen[str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", str(port),
                             "--secret", "s3cret"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield port, proc
    proc.terminate()
    proc.wait(timeout=10)


def test_webhook_receiver_verifies_signatures(receiver: tuple[int, subprocess.Popen[str]], tmp_path: Path) -> None:
    port, proc = receiver
    emit = run(str(EXAMPLES / "emit.py"), f"http://127.0.0.1:{port}/hook?secret=s3cret")
    assert emit.returncode == 0, emit.stderr
    assert "sent=3 dead_lettered=0" in emit.stderr
    forged = httpx.post(f"http://127.0.0.1:{port}/hook", content=b'{"specversion":"1.0"}',
                        headers={"Notifykit-Signature": "t=1,v1=00"})
    assert forged.status_code == 401
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    lines = out.splitlines()
    # Per-event requests run concurrently (max_concurrency), so arrival order may vary.
    assert sorted(line.split()[0] for line in lines if not line.startswith("rejected")) == [
        "backup.create.end", "backup.create.start", "backup.createprogress"]
    assert any(line.startswith("rejected:") for line in lines)



def test_ceilometer_consumer_meters_backup_size_from_rabbitmq(tmp_path: Path) -> None:
    """The backup example publishes through notifykit's amqp transport (a unique exchange);
    the aio-pika-only consumer prints one backup.size sample for create.end and delete.end."""
    from .amqp.support import BROKER_HOST, BROKER_PORT, BROKER_URL, Names, delete_all
    from .helpers import require_tcp

    require_tcp(BROKER_HOST, BROKER_PORT, "RabbitMQ")
    names = Names.fresh()
    consumer = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "ceilometer_consumer.py"), "--url", BROKER_URL, "--exchange", names.exchange,
         "--topic", names.topic, "--limit", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert consumer.stderr is not None
        readable, _, _ = select.select([consumer.stderr], [], [], 30)
        ready = consumer.stderr.readline() if readable else "(nothing within 30 s)"
        assert ready.startswith("# listening"), ready
        volume = tmp_path / "volume.img"
        volume.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
        url = f"{BROKER_URL}?exchange={names.exchange}&topic={names.topic}"
        backup = run(str(EXAMPLES / "backup_with_notifications.py"), str(volume), str(tmp_path / "work"), url)
        assert backup.returncode == 0, backup.stderr
        backup_id = backup.stdout.split()[1].rstrip(":")
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
        anyio.run(delete_all, names)
    assert consumer.returncode == 0, err
    samples = out.splitlines()
    assert len(samples) == 2, out
    for sample, event_type in zip(samples, ["backup.create.end", "backup.delete.end"], strict=True):
        fields = dict(item.split("=", 1) for item in sample.split()[2:])
        assert sample.startswith("backup.size gauge ")
        assert fields["event_type"] == event_type
        assert fields["resource_id"] == backup_id
        assert fields["volume"] == "1" and fields["unit"] == "GiB"  # 2 MiB rounds up to 1 GiB, as in Cinder
        assert fields["project_id"] == "default" and fields["user_id"] == "default"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", fields["timestamp"]), fields["timestamp"]


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("url", ["log://stderr", "memory://"])
def test_readme_quick_start_runs_and_switches_transport_by_url(tmp_path: Path, url: str) -> None:
    code = python_blocks(ROOT / "README.md")[0]
    assert 'URL = "log://stderr"' in code
    script = tmp_path / "quickstart.py"
    script.write_text(code.replace('URL = "log://stderr"', f'URL = "{url}"'), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            check=False)
    assert result.returncode == 0, result.stderr
    scheme = url.split(":")[0]
    assert result.stdout.strip() == f"{scheme}: sent=2 dead_lettered=0"
    assert result.stderr.count('"event_type":"backup.create.') == (2 if scheme == "log" else 0)


def getting_started_files(tmp_path: Path) -> None:
    """Write each code block of docs/getting-started.md that names its file in its first line."""
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", page, re.S):
        first = block.splitlines()[0].split()
        if len(first) >= 2 and first[0] == "#" and "." in first[1]:
            (tmp_path / first[1]).write_text(block, encoding="utf-8")


def test_getting_started_scripts_do_what_the_page_says(tmp_path: Path) -> None:
    getting_started_files(tmp_path)
    dead = tmp_path / "deadletters.jsonl"
    env = dict(os.environ, NOTIFYKIT_DEAD_LETTERS=str(dead))

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env=env, check=False)

    emitted = python("emit_demo.py")
    assert emitted.stdout == "log: sent=2 dead_lettered=0\n", emitted.stderr
    assert '"priority":"error"' in emitted.stderr
    refused = python("emit_demo.py", "memory://?fail=10&failure=permanent")
    assert refused.stdout == "memory: sent=0 dead_lettered=2\n", refused.stderr
    assert len(dead.read_text().splitlines()) == 2
    toml = tmp_path / "notifykit.toml"
    audit = tmp_path / "audit.jsonl"
    toml.write_text(toml.read_text().replace("/tmp/notifykit-audit.jsonl", str(audit)))
    config = python("emit_config.py")
    assert config.stdout == "audit: sent=2 filtered=0\nconsole: sent=1 filtered=1\n", config.stderr
    assert '"backup.create.error"' in config.stderr and '"backup.create.start"' not in config.stderr
    assert len(audit.read_text().splitlines()) == 2


def test_memory_transport_test_on_the_log_and_memory_page_passes(tmp_path: Path) -> None:
    [code] = python_blocks(ROOT / "docs" / "transports" / "log-and-memory.md")
    (tmp_path / "test_emits.py").write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             "-o", "asyncio_mode=strict", str(tmp_path / "test_emits.py")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
