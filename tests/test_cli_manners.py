"""Both CLIs as a new user meets them (issue 24, reproduction 8): ``--help`` is plain text,
``--version`` answers, and a refused AMQP login in ``notifykit tail`` is one error line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import notifykit

from .amqp.support import BROKER_HOST, BROKER_PORT
from .helpers import require_tcp


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, no logging configured, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize(("module", "prog"), [("notifykit.cli", "notifykit"),
                                              ("notifykit.backup.cli", "notifykit-backup")])
def test_help_is_plain_text(module: str, prog: str) -> None:
    done = run(module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {prog}")
    assert "``" not in done.stdout  # reST literal marks, as the module docstring has them
    assert done.stdout.split("\n\n", 2)[1].startswith(prog)  # the description still says what the tool is


@pytest.mark.parametrize(("module", "prog"), [("notifykit.cli", "notifykit"),
                                              ("notifykit.backup.cli", "notifykit-backup")])
def test_version(module: str, prog: str) -> None:
    done = run(module, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{prog} {notifykit.__version__}\n"


@pytest.mark.broker
def test_tail_with_a_wrong_amqp_password_is_one_error_line() -> None:
    require_tcp(BROKER_HOST, BROKER_PORT, "RabbitMQ")
    done = run("notifykit.cli", "tail", "--limit", "1",
               f"amqp://guest:not-the-password@{BROKER_HOST}:{BROKER_PORT}/")
    assert done.returncode == 2
    assert done.stderr.startswith("notifykit: error: AMQP broker refused the connection"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # not a log line saying it first
    assert "not-the-password" not in done.stderr


def test_a_failed_backup_operation_is_one_error_line(tmp_path: Path) -> None:
    """The service logs the failure on the ``backup`` logger; run as an operator runs it (no
    logging configured) the CLI printed that line and then the same error again."""
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": str(tmp_path / "objects"),
           "NOTIFYKIT_BACKUP_NOTIFIER_URL": f"log://{tmp_path / 'n.jsonl'}"}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "notifykit.backup.cli", "create", str(tmp_path / "missing.img")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr == f"notifykit-backup: error: volume {str(tmp_path / 'missing.img')!r} does not exist\n"
