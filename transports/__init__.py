"""Backends for notifykit, each registered in the ``notifykit.transports`` entry-point group.

Transports depend only on notifykit's public protocol; the core never imports them.
"""
