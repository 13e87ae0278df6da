"""Turn pydantic validation errors into one sentence a person can act on."""

from __future__ import annotations


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
