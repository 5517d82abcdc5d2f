"""Kafka transport (``kafka://``, ``kafka+ssl://``), built on aiokafka."""

from .transport import KafkaTransport, message_headers, message_key

__all__ = ["KafkaTransport", "message_headers", "message_key"]
