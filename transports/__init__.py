"""Backends for notifykit, each registered in the ``notifykit.transports`` entry-point group.

Each is one module of the same shape (an options dataclass, classify, open/send/aclose) that
imports only the core's public modules (``notifykit.transport``, and ``notifykit.signing`` or
``notifykit.testing`` where it needs them); the core never imports them.
"""
