"""Numbered schema migrations. Append only: never edit one that has shipped, add the next."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("lima_studio")


@migrations()
def m001_models_registry(db: Database) -> None:
    # The names the service serves and the folders behind them; a retrain replaces a row only
    # after its checkpoint is complete, so a failed run never touches what is served.
    db["models"].create(
        {"name": str, "path": str, "kind": str, "run_id": str, "registered": str},
        pk="name",
        not_null={"path", "kind", "registered"},
    )
