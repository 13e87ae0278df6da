"""A training recipe: the paper's base file, a preset that overrides what differs, then flags.

    training/presets/base.yaml      the LIMA paper's numbers, once
    training/presets/<name>.yaml    `inherits: base` and only what differs (lima-paper, cpu-demo)

A recipe has a block per trainer. ``sft`` holds TRL ``SFTConfig`` fields, passed to it as they are
(as the alignment-handbook recipes do), so TRL's own names and defaults apply and any field of it
can be set; ``kto`` and ``dpo`` hold ``KTOConfig`` and ``DPOConfig`` fields for the preference stages
(``lima train --stage kto|dpo``), the same way. ``lima`` holds what TRL has no field for: the LIMA sample, the batch size by model size
(made by gradient accumulation), residual dropout, the checkpoint window and dev prompts, LoRA,
the end-of-turn token and the decoding of the dev answers (defaults: ``lima.chat_format`` and
``lima.paper``). ``--set sft.num_train_epochs=3`` or ``--set lima.lora.r=8`` overrides a field;
``--base``, ``--max-steps`` and ``--lora`` are shortcuts. The fields ``lima train`` itself decides
(output folder, loss masking, EOS, saving, logging) cannot be set here, and say so.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lima.chat_format import EOT
from lima.paper import DECODING
from lima.validation import validation_message

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
BASE = "base"
# SFTConfig fields `lima train` sets itself, from the run and the LIMA format.
DECIDED = {"output_dir", "assistant_only_loss", "completion_only_loss", "eos_token", "packing", "use_cpu",
           "save_strategy", "save_only_model", "logging_steps", "report_to", "gradient_accumulation_steps",
           "data_seed", "dataloader_drop_last", "chat_template_path"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
            raise ValueError(f"lima.checkpoints.epochs must be [first, last] with 1 <= first <= last, "
                             f"got {list(self.epochs)}")
        return self


class Lora(Strict):
    enabled: bool = False
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)


class Decoding(Strict):
    temperature: float = Field(default=DECODING["temperature"], ge=0)
    top_p: float = Field(default=DECODING["top_p"], gt=0, le=1)
    repetition_penalty: float = Field(default=DECODING["repetition_penalty"], gt=0)


class Preference(Strict):
    # Pass's weight relative to Excellent in a KTO set (``dialogues.preferences``): 0 leaves Pass out
    pass_weight: float = Field(default=1.0, ge=0, le=1)
    min_rows: int = Field(default=1, ge=1)  # a smaller set is refused: too little to learn from
    max_rows: int | None = Field(default=None, ge=1)  # keep the newest ratings up to this many rows (CPU time)


class Behaviour(Strict):
    """What every run measures its model and its parent on (``training/behaviour.py``)."""

    dev_prompts: int = Field(default=50, ge=0, le=50)  # the first N development prompts
    openers: int = Field(default=10, ge=0, le=10)  # the first N evaluation openers, as conversations
    follow_ups: int = Field(default=3, ge=0, le=4)  # each opener's first N scripted follow-ups
    max_new_tokens: int = Field(default=2048, ge=1)  # a reply's cap: one that reaches it did not end
    references: int = Field(default=32, ge=0)  # held-out reference conversations for P(end) and P(EOT)
    seed: int = 0
    max_batch: int = Field(default=16, ge=1)  # replies generated at once
    # in a process of its own (training/common.py: decoding after training is 45% faster there);
    # false where starting one (seconds of imports) costs more than the measurement, a tiny model's
    apart: bool = True


class Lima(Strict):
    eot_token: str = Field(default=EOT, min_length=1)
    # where the new EOT token's rows start (training/chat_setup.py, training/eot_fit.py): the base's
    # own end of turn, then its output row fitted to the run's data; the copy alone; or the mean
    # embedding (the old start, kept to measure against)
    eot_init: Literal["fitted", "end-token", "mean"] = "fitted"
    eot_fit_tokens: int = Field(default=16000, ge=1)  # training tokens the fit reads (one forward pass)
    lima_examples: int | None = Field(default=None, ge=1)
    seed: int = 0
    batch_size: int = Field(ge=1)
    small_model_batch_size: int = Field(ge=1)
    small_model_params: float = Field(gt=0)
    residual_dropout: ResidualDropout
    checkpoints: Checkpoints
    lora: Lora
    decoding: Decoding = Field(default_factory=Decoding)
    preference: Preference = Field(default_factory=Preference)
    behaviour: Behaviour = Field(default_factory=Behaviour)


class Recipe(Strict):
    name: str = ""
    description: str
    base: str
    sft: dict[str, Any]
    kto: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    lima: Lima

    def stage(self, stage: str) -> dict[str, Any]:
        """The trainer config block of ``stage`` (sft, kto or dpo)."""
        return {"sft": self.sft, "kto": self.kto, "dpo": self.dpo}[stage]

    def is_small(self, parameters: int) -> bool:
        return parameters < self.lima.small_model_params

    def batch_size(self, parameters: int) -> int:
        return self.lima.small_model_batch_size if self.is_small(parameters) else self.lima.batch_size

    def dropout_top(self, parameters: int) -> float:
        top = self.lima.residual_dropout
        return top.small_model_top if self.is_small(parameters) else top.top

    @property
    def max_length(self) -> int:
        return int(self.sft.get("max_length") or 1024)  # TRL's default when a recipe leaves it out

    def summary(self, parameters: int | None = None) -> str:
        """The recipe's numbers in one line, read from its fields (never restated by hand)."""
        sft, lima = self.sft, self.lima
        end = (sft.get("lr_scheduler_kwargs") or {}).get("lr_end")
        rate = f"lr {sft.get('learning_rate'):g}" + (f" -> {end:g} linear" if end is not None else "")
        batch = (f"{self.batch_size(parameters)} examples per step" if parameters else
                 f"{lima.batch_size} examples per step ({lima.small_model_batch_size} below "
                 f"{lima.small_model_params:.0e} parameters)")
        dropout = lima.residual_dropout
        return (f"{sft.get('num_train_epochs', 3):g} epochs, AdamW ({sft.get('adam_beta1', 0.9):g}, "
                f"{sft.get('adam_beta2', 0.999):g}), weight decay {sft.get('weight_decay', 0):g}, {rate}, "
                f"warm-up {sft.get('warmup_steps', 0):g} steps, texts cut at {self.max_length} tokens, {batch}, "
                f"residual dropout 0 -> {dropout.top:g} ({dropout.small_model_top:g} for small models), "
                f"checkpoints of epochs {lima.checkpoints.epochs[0]}-{lima.checkpoints.epochs[1]}")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-3`` as a string; a learning rate written that way must still be a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml") if p.stem != BASE)


def merged(low: dict, high: dict) -> dict:
    """``high`` over ``low``, section by section (lists and values replace, mappings merge)."""
    out = copy.deepcopy(low)
    for key, value in high.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: Path) -> dict:
    tree = _yaml(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections, got {type(tree).__name__}")
    parent = tree.pop("inherits", None)
    if parent is None:
        return tree
    parent_path = PRESETS_DIR / f"{parent}.yaml"
    if not parent_path.exists() or parent_path == path:
        raise ValueError(f"{path}: inherits '{parent}', which is not a recipe in {PRESETS_DIR}")
    return merged(_read(parent_path), tree)


def _set(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ValueError(f"--set {dotted}: '{key}' is not a section of the recipe")
        node = node[key]
    node[keys[-1]] = value


def check_block(stage: str, block: dict[str, Any]) -> None:
    """Every key of a trainer block must be a field of its TRL config that ``lima train`` does not
    decide itself."""
    import dataclasses

    import trl

    config = {"sft": trl.SFTConfig, "kto": trl.KTOConfig, "dpo": trl.DPOConfig}[stage]
    fields = {f.name for f in dataclasses.fields(config)}
    for key in block:
        if key in DECIDED:
            raise ValueError(f"{stage}.{key} is set by `lima train` itself (from the run and the LIMA format); "
                             "leave it out of the recipe")
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(f"{stage}.{key} is not a field of TRL's {config.__name__}"
                             + (f" (did you mean {near[0]}?)" if near else ""))


def load(preset: str, overrides: list[str] | None = None, **shortcuts) -> Recipe:
    """The preset's recipe with ``--set key=value`` overrides and flag shortcuts applied
    (``sft__max_steps=5`` sets ``sft.max_steps``)."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else PRESETS_DIR / f"{preset}.yaml"
    if not path.exists() or path.stem == BASE and path.parent == PRESETS_DIR:
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(presets())} or give a YAML file")
    tree = _read(path)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        _set(tree, key.strip(), _yaml(raw))
    for dotted, value in shortcuts.items():
        if value is not None:
            _set(tree, dotted.replace("__", "."), value)
    try:
        recipe = Recipe.model_validate({**tree, "name": path.stem})
    except ValidationError as exc:
        raise ValueError(f"{path}: {validation_message(exc.errors())[0]}") from None
    for stage in ("sft", "kto", "dpo"):
        check_block(stage, recipe.stage(stage))
    return recipe
