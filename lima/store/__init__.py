"""The SQLite store (sqlite-utils): one file, WAL mode, numbered migrations applied on every open.

The only code that reads or writes SQL (``tests/test_layout.py`` checks): a module per kind of
record. ``runs`` (with progress and development answers), ``behaviour``, ``comparisons``,
``judgments``, ``experiments`` and ``registry`` return dataclasses; ``chatlog`` returns the chat
log's conversations and turns as plain rows, the shape the exports write.
"""

from sqlite3 import OperationalError as Busy  # a write that waited out the busy timeout (the log is locked)

from lima.store.db import connect, utcnow

__all__ = ["Busy", "connect", "utcnow"]
