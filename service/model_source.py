"""Where a served model comes from: ``NAME=PATH_OR_ID`` specs and the checks made before loading."""

from __future__ import annotations

import json
from pathlib import Path

from service.engines.base import ModelLoadError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"base=/models/x"`` -> ``("base", "/models/x")``; a bare ``/models/x`` is served as ``base``."""
    name, sep, source = spec.partition("=")
    if not sep:
        name, source = "base", spec
    name, source = name.strip(), source.strip()
    if not name or not source:
        raise ValueError(f"--model expects NAME=PATH_OR_ID, got {spec!r}")
    return name, source


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def check_folder(name: str, source: str) -> Path | None:
    """For a local folder, fail early with a message a person can act on. Hub ids pass through."""
    if not looks_like_path(source):
        return None
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise ModelLoadError(f"model '{name}': folder {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"model '{name}': {path} is a file, not a model folder")
    if (path / "adapter_config.json").exists():
        return path
    if not (path / "config.json").exists():
        raise ModelLoadError(f"model '{name}': {path} is not a model folder (no config.json)")
    try:
        json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"model '{name}': {path}/config.json is not valid JSON ({exc})") from exc
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise ModelLoadError(f"model '{name}': {path} has no weights (expected one of {', '.join(WEIGHT_FILES[:3])})")
    return path
