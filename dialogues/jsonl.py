"""Read and write the JSONL files with validation that names the file, the line and the field."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from lima.validation import validation_message

Record = TypeVar("Record", bound=BaseModel)


class DataError(ValueError):
    """A data file is wrong; the message starts with ``file:line:`` and names the field."""


def parse_lines(path: Path) -> Iterable[tuple[int, dict]]:
    """(line number, object) for every non-blank line; invalid JSON raises DataError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def load(path: str | Path, model: type[Record], expected: int | None = None) -> list[Record]:
    """Every record of ``path`` validated as ``model``; ids unique; ``expected`` records if given."""
    path = Path(path)
    records, first_line = [], {}
    for number, obj in parse_lines(path):
        try:
            record = model.model_validate(obj)
        except ValidationError as exc:
            message, _ = validation_message(exc.errors())
            raise DataError(f"{path}:{number}: {message}") from None
        if record.id in first_line:
            raise DataError(f"{path}:{number}: id: duplicate id '{record.id}' (first on line {first_line[record.id]})")
        first_line[record.id] = number
        records.append(record)
    if expected is not None and len(records) != expected:
        raise DataError(f"{path}: expected {expected} records, found {len(records)}")
    return records


def write(path: str | Path, records: Iterable[BaseModel | dict]) -> Path:
    """Write JSONL atomically: a reader never sees half a file, a failure leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for record in records:
                data = record.model_dump(exclude_none=True) if isinstance(record, BaseModel) else record
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
