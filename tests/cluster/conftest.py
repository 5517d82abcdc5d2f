"""A 3-node RabbitMQ cluster (scripts/rabbitmq-cluster) for the whole session, on loopback.

Started once (15-40 s), stopped by PID at the end. A test that asks for ``cluster`` gets
every node up (nodes a previous test stopped or killed are started again first). Skips with one line
when RabbitMQ is not installed; fails instead under NOTIFYKIT_REQUIRE_BROKERS=1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import pytest_asyncio

from ..amqp.support import Names
from ..helpers import script_server
from .support import delete_entities


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with script_server(tmp_path_factory, "rabbitmq-cluster", "RabbitCluster", "RabbitMQ", "rabbitmq-server") as cluster:
        yield cluster


@pytest.fixture
def cluster(rabbit_cluster: Any) -> Any:
    """The session's cluster with every node running (a node an earlier test stopped or
    killed is started again here, not in that test's teardown: the last test needs no heal)."""
    rabbit_cluster.heal()
    return rabbit_cluster


@pytest_asyncio.fixture
async def cluster_names(rabbit_cluster: Any) -> AsyncIterator[Names]:
    """A unique exchange and topics; their queues and exchange are deleted afterwards,
    through a node that is up."""
    names = Names.fresh()
    yield names
    up = [n for n in rabbit_cluster.nodes if rabbit_cluster.running(n.index) and n.index not in rabbit_cluster.apps_stopped]
    if len(up) * 2 <= rabbit_cluster.size:  # no quorum: the queues cannot be deleted without one
        await anyio.to_thread.run_sync(rabbit_cluster.heal)
        up = rabbit_cluster.nodes
    await delete_entities(up[0].url, names)
