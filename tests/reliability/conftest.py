"""The reliability suite uses the real brokers' fixtures of the transport suites."""

from ..kafka.conftest import own_broker, tansu_binary

__all__ = ["own_broker", "tansu_binary"]
