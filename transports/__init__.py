"""Backends for notifykit, each registered in the ``notifykit.transports`` entry-point group.

Each is one module of the same shape (an options dataclass, classify, open/send/aclose) that
imports only ``notifykit.transport``; the core never imports them.
"""
