"""A real Keystone (scripts/keystone-aio) and a Swift all-in-one whose proxy validates its
tokens (keystonemiddleware's authtoken + Swift's keystoneauth), for the whole session.

Skips with one line when Keystone or Swift is not installed; fails instead under
NOTIFYKIT_REQUIRE_BROKERS=1 (CI installs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..helpers import load_script, unavailable


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Keystone, with the object-store service registered at the Swift proxy below."""
    keystone_aio, swift_aio = load_script("keystone-aio"), load_script("swift-aio")
    missing = keystone_aio.missing_binaries() + swift_aio.missing_binaries()
    if missing:
        unavailable(f"Keystone or Swift not installed (missing {', '.join(missing)}; apt-get install keystone"
                    " python3-keystonemiddleware swift swift-proxy swift-object swift-container swift-account"
                    " memcached)")
    server = keystone_aio.KeystoneAIO(tmp_path_factory.mktemp("keystone-aio")).start()
    try:
        swift = swift_aio.SwiftAIO(tmp_path_factory.mktemp("swift-keystone"), keystone=server.info()).start()
        try:
            server.register_swift(swift.proxy_url)
            server.swift = swift
            yield server
        finally:
            swift.stop()
    finally:
        server.stop()
