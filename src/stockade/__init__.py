"""Stockade: a secure enterprise instant-messaging server (XMPP)."""

__version__ = "0.1.0"
