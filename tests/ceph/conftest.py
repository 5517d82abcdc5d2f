"""A real single-node Ceph (scripts/ceph-aio: mon + memstore OSD + RGW) for the whole session.

Started once per test session, on free loopback ports in a temp dir. Skips every Ceph test
with a one-line reason when the Ceph packages are missing, and fails instead under
NOTIFYKIT_REQUIRE_BROKERS=1 (CI installs them).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ..helpers import REQUIRE_BROKERS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ceph-aio"


def load_ceph_aio() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("ceph_aio", str(SCRIPT))
    spec = importlib.util.spec_from_loader("ceph_aio", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ceph_aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    module = load_ceph_aio()
    missing = module.missing_binaries()
    if missing:
        reason = (f"Ceph not installed (missing {', '.join(missing)}; apt-get install ceph-mon ceph-mgr ceph-osd"
                  " radosgw ceph-common)")
        if REQUIRE_BROKERS:
            pytest.fail(f"{reason}; NOTIFYKIT_REQUIRE_BROKERS=1 makes this a failure")
        pytest.skip(reason)
    aio = module.CephAIO(tmp_path_factory.mktemp("ceph-aio"))
    aio.start()
    try:
        yield aio
    finally:
        aio.stop()
