"""The SQLite store (sqlite-utils): one file, WAL mode, numbered migrations applied on every open."""

from lima.store.db import connect, utcnow

__all__ = ["connect", "utcnow"]
