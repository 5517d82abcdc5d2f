"""The reliability suite uses the real brokers' fixtures of the transport suites."""

from ..amqp.conftest import broker, names
from ..kafka.conftest import own_broker, tansu_binary

__all__ = ["broker", "names", "own_broker", "tansu_binary"]
