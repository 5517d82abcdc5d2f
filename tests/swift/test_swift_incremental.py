"""Incremental backups on a real Swift (the all-in-one fixture): the same scenarios as on
the posix store, objects and block lists in Swift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifykit.backup._swift import SwiftOptions

from ..backup import incremental_cases as cases
from .helpers import SwiftAPI, swift_env

pytestmark = pytest.mark.asyncio


async def test_full_change_incremental_restore_both(tmp_path: Path, swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options, chunk_size=cases.CHUNK) as env:
        await cases.full_change_incremental_restore(env)


async def test_chain_of_three(tmp_path: Path, swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options, chunk_size=cases.CHUNK, compression="zstd") as env:
        await cases.chain_of_three(env)


async def test_delete_order_leaves_swift_empty(tmp_path: Path, swift_aio: Any, swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options, chunk_size=cases.CHUNK) as env, SwiftAPI(swift_aio) as api:
        await cases.delete_order(env)
        containers = [r.container for r in await env.service.list(include_deleted=True)]
        left = [await api.listing(str(c)) for c in containers]
    assert len(containers) == 2 and left == [None, None]


async def test_a_damaged_block_fails_the_restore(tmp_path: Path, swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options, chunk_size=cases.CHUNK) as env:
        await cases.damaged_increment_fails_restore(env)
