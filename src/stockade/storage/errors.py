"""Errors the storage layer raises: each message says what failed and what to do about it."""

from __future__ import annotations


class StorageError(Exception):
    """The database could not do what was asked (unreachable, locked, corrupt, wrong schema)."""


class AccountExists(StorageError):
    """An account with this host and username already exists."""
