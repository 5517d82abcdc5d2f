"""A real single-node Ceph (scripts/ceph-aio: mon + memstore OSD + RGW) for the whole session.

Started once per test session, on free loopback ports in a temp dir. Skips every Ceph test
with a one-line reason when the Ceph packages are missing, and fails instead under
NOTIFYKIT_REQUIRE_BROKERS=1 (CI installs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..helpers import script_server


@pytest.fixture(scope="session")
def ceph_aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with script_server(tmp_path_factory, "ceph-aio", "CephAIO", "Ceph",
                       "ceph-mon ceph-mgr ceph-osd radosgw ceph-common") as aio:
        yield aio
