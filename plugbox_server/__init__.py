"""Plugbox's host side: the `plugbox` executable that owns a service's versions."""

__version__ = "0.1.0"
