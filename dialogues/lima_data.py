"""The LIMA dataset (Zhou et al. 2023): 1,000 single-turn examples and 30 multi-turn dialogues.

Read from a local JSONL copy in the hub's format (``{"conversations": [str, ...], "source": str}``,
turns alternating user/assistant) or from the gated hub dataset ``GAIR/lima`` with a token from
``HF_TOKEN``. Rows become ``Example``/``Chain`` records in the project's messages format. One
``multi_turn`` row of the public release ends on a user turn; that turn is trimmed with a warning.
The data is CC BY-NC-SA: it is read where it lives and never copied into this repository.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from dialogues.jsonl import DataError, parse_lines
from dialogues.schema import Chain, Example
from lima.validation import validation_message

log = logging.getLogger("lima.data")

HUB_ID = "GAIR/lima"
MULTI_TURN = "multi_turn"


class TrimmedTurnWarning(UserWarning):
    """A dialogue ended on a user turn, which has nothing to learn from; the turn was dropped."""


@dataclass
class LimaData:
    origin: str
    single: list[Example]
    multi: list[Chain]


def default_source() -> str:
    """``$LIMA_DATASET`` (a local JSONL file) when set, else the hub dataset."""
    return os.environ.get("LIMA_DATASET") or HUB_ID


def _rows_from_hub(hub_id: str) -> list[tuple[str, dict]]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise DataError(f"{hub_id} is a gated dataset: set HF_TOKEN to a Hugging Face token that has accepted "
                        f"its terms, or pass the path of a local train.jsonl copy")
    from datasets import load_dataset

    try:
        dataset = load_dataset(hub_id, split="train", token=token)
    except Exception as exc:  # network, auth, offline mode: all end the same way for the user
        raise DataError(f"{hub_id}: could not load from the hub ({exc})") from exc
    return [(f"{hub_id}[{i}]", row) for i, row in enumerate(dataset)]


def _rows_from_file(path: Path) -> list[tuple[str, dict]]:
    return [(f"{path}:{number}", obj) for number, obj in parse_lines(path)]


def _convert(where: str, index: int, row: dict) -> Example | Chain:
    turns, source = row.get("conversations"), row.get("source")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: conversations: expected a non-empty list of strings "
                        f"(is this a LIMA file? got {type(turns).__name__})")
    if not isinstance(source, str):
        raise DataError(f"{where}: source: expected a string, got {type(source).__name__}")
    bad = next((i for i, t in enumerate(turns) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{where}: conversations[{bad}]: expected a string, got {type(turns[bad]).__name__}")
    if source == MULTI_TURN and len(turns) % 2 == 1 and len(turns) > 2:
        warnings.warn(f"{where}: multi_turn dialogue ends on a user turn; trimmed it to {len(turns) - 1} turns",
                      TrimmedTurnWarning, stacklevel=3)
        turns = turns[:-1]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    record = {"id": f"lima-{index:04d}", "source": f"lima/{source}", "messages": messages}
    try:
        if source == MULTI_TURN:
            return Chain.model_validate({**record, "kind": "lima"})
        return Example.model_validate(record)
    except ValidationError as exc:
        message, _ = validation_message(exc.errors())
        raise DataError(f"{where}: {message}") from None


def load(source: str | Path | None = None) -> LimaData:
    """LIMA's training rows, single-turn and multi-turn kept apart."""
    source = str(source or default_source())
    path = Path(source).expanduser()
    is_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.endswith(".jsonl")
    rows = _rows_from_hub(source) if is_hub_id and not path.exists() else _rows_from_file(path)
    if not rows:
        raise DataError(f"{source}: no rows")
    single, multi = [], []
    for index, (where, row) in enumerate(rows, start=1):
        record = _convert(where, index, row)
        (multi if isinstance(record, Chain) else single).append(record)
    log.info("LIMA from %s: %d single-turn, %d multi-turn", source, len(single), len(multi))
    return LimaData(source, single, multi)
