"""Model files: ``NAME=PATH_OR_ID`` specs, the checks made before loading a folder, and the error
that names what is wrong with one. The service loads models and training starts from them."""

from __future__ import annotations

import json
from pathlib import Path


class ModelLoadError(Exception):
    """A model could not be loaded: the message names the model, the source and the cause."""

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
