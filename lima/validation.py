"""Shared pydantic pieces: strings that must say something, and errors as one sentence."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StrictStr


def non_blank(message: str):
    """A string field (never coerced from a number or a list) refused with ``message`` when it
    holds only whitespace; the value itself is kept as written."""

    def check(value: str) -> str:
        if not value.strip():
            raise ValueError(message)
        return value

    return Annotated[StrictStr, AfterValidator(check)]


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """Turn pydantic errors into one sentence naming each bad field, e.g. ``messages[1].role: ...``."""
    parts, first_param = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        param = ""
        for p in loc:
            param += f"[{p}]" if p.isdigit() else (f".{p}" if param else p)
        first_param = first_param or param or None
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{param}: {msg}" if param else msg)
    return "; ".join(parts), first_param
