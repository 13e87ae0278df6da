"""The models registry: which folder each served name points at.

Training writes a row only after its checkpoint is completely saved; ``lima serve`` serves every
registered model at start, and a running service is told to (re)load a name over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from lima.store.db import utcnow


def register(db: Database, name: str, path: str, kind: str = "manual", run_id: str | None = None,
             warning: str | None = None) -> None:
    """Serve ``path`` as ``name``; ``warning`` says why the model is worse than the one it came from."""
    db["models"].upsert({"name": name, "path": path, "kind": kind, "run_id": run_id, "registered": utcnow(),
                         "warning": warning}, pk="name")


@dataclass
class RegisteredModel:
    name: str
    path: str
    kind: str
    registered: str
    run_id: str | None = None
    warning: str | None = None


def get(db: Database, name: str) -> RegisteredModel | None:
    if not db["models"].exists():
        return None
    rows = list(db["models"].rows_where("name = ?", [name], limit=1))
    return RegisteredModel(**rows[0]) if rows else None


def registered(db: Database) -> dict[str, str]:
    """name -> folder, in registration order."""
    if not db["models"].exists():
        return {}
    return {row["name"]: row["path"] for row in db["models"].rows_where(order_by="registered")}


def warnings(db: Database) -> dict[str, str]:
    """name -> why it is worse than its parent, for the registered models that carry a warning."""
    if not db["models"].exists():
        return {}
    return {row["name"]: row["warning"] for row in db["models"].rows_where("warning is not null")}
