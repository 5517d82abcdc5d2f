"""A real OpenStack Swift all-in-one (scripts/swift-aio) for the whole session, on loopback.

Skips every Swift test with a one-line reason when the Swift binaries are missing, and
fails instead under NOTIFYKIT_REQUIRE_BROKERS=1 (CI installs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from notifykit.backup._swift import SwiftOptions

from ..helpers import script_server


@pytest.fixture(scope="session")
def swift_aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with script_server(tmp_path_factory, "swift-aio", "SwiftAIO", "Swift",
                       "swift swift-proxy swift-object swift-container swift-account memcached") as aio:
        yield aio


@pytest.fixture
def swift_options(swift_aio: Any) -> SwiftOptions:
    """TempAuth credentials for the session's Swift; short retry waits keep failure tests fast."""
    return SwiftOptions.from_url(swift_aio.info()["store_url"], {"retry_backoff": 0.05})
