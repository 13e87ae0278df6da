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


class Checkpoint:
    """A folder's safetensors weights, read one tensor at a time on request with ``pread``, for a
    server that converts each weight as it goes: a memory-mapped file counts in the process's
    memory for as long as it is mapped, so mapping a float32 checkpoint while converting it to
    float16 would hold both at once. ``Checkpoint.of`` is None where the folder has no
    safetensors weights (``.bin`` files, a LoRA adapter): those load through transformers."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._handles = [safe_open(str(f), framework="pt", device="cpu", backend="pread") for f in files]
        self._where = {key: handle for handle in self._handles for key in handle.keys()}

    @classmethod
    def of(cls, path: Path | None) -> "Checkpoint | None":
        if path is None or (path / "adapter_config.json").exists():
            return None
        index = path / "model.safetensors.index.json"
        if index.exists():
            files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
        else:
            files = [path / "model.safetensors"]
        return cls(files) if all(f.exists() for f in files) else None

    def __getitem__(self, key: str):
        if key not in self._where:
            raise KeyError(f"the checkpoint has no tensor {key!r}")
        return self._where[key].get_tensor(key)

    def close(self) -> None:
        for handle in self._handles:
            handle.__exit__(None, None, None)
        self._handles, self._where = [], {}
