"""A training recipe: one YAML file per preset (training/presets/), overridden by flags.

Every hyperparameter lives in the preset file; code reads it from here. ``--set train.epochs=3``
overrides any field; the dedicated flags (``--base``, ``--max-steps``, ``--lora``) are shortcuts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lima.validation import validation_message

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Data(Strict):
    lima_examples: int | None = Field(default=None, ge=1)
    max_length: int = Field(ge=32)
    seed: int = 0


class Train(Strict):
    epochs: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    final_learning_rate: float = Field(ge=0)
    warmup_steps: int = Field(ge=0)
    adam_beta1: float = Field(ge=0, lt=1)
    adam_beta2: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    small_model_batch_size: int = Field(ge=1)
    small_model_params: float = Field(gt=0)
    micro_batch_size: int = Field(ge=1)
    mixed_precision: Literal["bf16", "fp16", "fp32"]
    activation_checkpointing: bool
    max_steps: int | None = Field(default=None, ge=1)


class ResidualDropout(Strict):
    top: float = Field(ge=0, lt=1)
    small_model_top: float = Field(ge=0, lt=1)


class Checkpoints(Strict):
    epochs: tuple[int, int]
    dev_prompts: int = Field(ge=0, le=50)
    dev_max_new_tokens: int = Field(ge=1)

    @model_validator(mode="after")
    def ordered(self):
        if self.epochs[0] > self.epochs[1] or self.epochs[0] < 1:
            raise ValueError(f"checkpoints.epochs must be [first, last] with 1 <= first <= last, got {list(self.epochs)}")
        return self


class Lora(Strict):
    enabled: bool = False
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)


class Recipe(Strict):
    name: str = ""
    description: str
    base: str
    eot_token: str = Field(min_length=1)
    data: Data
    train: Train
    residual_dropout: ResidualDropout
    checkpoints: Checkpoints
    lora: Lora

    def is_small(self, parameters: int) -> bool:
        return parameters < self.train.small_model_params

    def batch_size(self, parameters: int) -> int:
        return self.train.small_model_batch_size if self.is_small(parameters) else self.train.batch_size

    def dropout_top(self, parameters: int) -> float:
        return self.residual_dropout.small_model_top if self.is_small(parameters) else self.residual_dropout.top


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _set(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ValueError(f"--set {dotted}: '{key}' is not a section of the recipe")
        node = node[key]
    node[keys[-1]] = value


def load(preset: str, overrides: list[str] | None = None, **shortcuts) -> Recipe:
    """The preset's recipe with ``--set key=value`` overrides and flag shortcuts applied."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else PRESETS_DIR / f"{preset}.yaml"
    if not path.exists():
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(presets())} or give a YAML file")
    tree = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        _set(tree, key.strip(), yaml.safe_load(raw))
    for dotted, value in shortcuts.items():
        if value is not None:
            _set(tree, dotted.replace("__", "."), value)
    try:
        recipe = Recipe.model_validate({**tree, "name": path.stem})
    except ValidationError as exc:
        raise ValueError(f"{path}: {validation_message(exc.errors())[0]}") from None
    return recipe
