"""What a training run is asked to do, built once: from `lima train`'s flags, or by the workbench.

``TrainRequest`` is the one description of a run that every stage reads (``training/sft.py``,
``training/preference.py``); ``add_arguments`` is `lima train`'s command line for it, and
``argv()`` turns a request back into that command line, so the Retrain tab starts exactly the run
the CLI would.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

from dialogues import preferences
from lima import paper


@dataclass(slots=True)  # slots: a misspelt field is an error, not a silent no-op
class TrainRequest:
    variant: str = "dialogue"
    preset: str = "cpu-demo"
    lima: str | None = None  # LIMA JSONL file or hub id (None: $LIMA_DATASET, else GAIR/lima)
    chains: str = "project"
    base: str | None = None  # None: the preset's
    max_steps: int | None = None
    lora: bool | None = None
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE
    service_url: str | None = None
    pause_service: str = "auto"
    judge_url: str | None = None
    judge_model: str | None = None
    stage: str = "sft"
    from_model: str | None = None
    models: list[str] | None = None
    raters: list[str] | None = None
    openers_only: bool = False
    since: str | None = None
    expect_sha256: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainRequest":
        values = vars(args)
        return cls(**{f.name: values[f.name if f.name != "overrides" else "set"] for f in fields(cls)
                      if (f.name if f.name != "overrides" else "set") in values})

    @property
    def filters(self) -> preferences.Filters:
        return preferences.Filters(self.models, self.raters, self.openers_only, self.since)

    def argv(self) -> list[str]:
        """The `lima train` flags for this request (what differs from the defaults)."""
        default = TrainRequest()
        out = ["--variant", self.variant, "--preset", self.preset]
        flags = {"lima": "--lima", "base": "--base", "service_url": "--service-url", "judge_url": "--judge-url",
                 "judge_model": "--judge-model", "from_model": "--from", "since": "--since",
                 "expect_sha256": "--expect-sha256", "pause_service": "--pause-service", "stage": "--stage"}
        if self.stage == "sft" and self.chains != default.chains:
            out += ["--chains", self.chains]
        for name, flag in flags.items():
            value = getattr(self, name)
            if value is not None and value != getattr(default, name):
                out += [flag, str(value)]
        if self.max_steps is not None:
            out += ["--max-steps", str(self.max_steps)]
        if self.lora:
            out.append("--lora")
        for item in self.overrides:
            out += ["--set", item]
        for name in ("models", "raters"):
            if getattr(self, name):
                out += [f"--{name}", *getattr(self, name)]
        if self.openers_only:
            out.append("--openers-only")
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training import recipe as recipes

    parser.add_argument("--variant", required=True, choices=paper.VARIANTS)
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {', '.join(recipes.presets())}, or a YAML file")
    parser.add_argument("--lima", help="LIMA JSONL file or hub id (default: $LIMA_DATASET, else GAIR/lima)")
    parser.add_argument("--chains", default="project", help="dialogue chains: project, lima, or a chains JSONL file")
    parser.add_argument("--base", default=os.environ.get("LIMA_BASE_MODEL"),
                        help="base model folder or hub id ('embedded' = SmolLM2-135M-Instruct; default: "
                             "$LIMA_BASE_MODEL, else the preset's)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters, merged at the end")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL"),
                        help="a running `lima serve` to load the new model into (default: $LIMA_SERVICE_URL; "
                             "its key, if it needs one, from $LIMA_API_KEY)")
    parser.add_argument("--pause-service", choices=["auto", "always", "never"], default="auto",
                        help="sleep the service while training (auto: when it uses the GPU this run trains on)")
    parser.add_argument("--judge-url", default=os.environ.get("LIMA_JUDGE_URL"), help="OpenAI-compatible judge")
    parser.add_argument("--judge-model", default=os.environ.get("LIMA_JUDGE_MODEL"))
    stages = parser.add_argument_group("preference stages (training/preference.py)")
    stages.add_argument("--stage", choices=("sft", *preferences.STAGES), default="sft",
                        help="sft: supervised on LIMA (+ chains); kto: learn from the Fail / Pass / Excellent "
                             "ratings; dpo: learn from the rewrites")
    stages.add_argument("--from", dest="from_model", metavar="MODEL",
                        help="the model a kto/dpo stage starts from: 'base' or a registered one (default: the "
                             "variant's, lima-dialogue); the new one is served as MODEL-kto or MODEL-dpo")
    stages.add_argument("--models", nargs="+", metavar="NAME", help="only replies of these models")
    stages.add_argument("--raters", nargs="+", metavar="NAME", help="only these raters' ratings and rewrites")
    stages.add_argument("--openers-only", action="store_true",
                        help="only conversations that start from an evaluation opener")
    stages.add_argument("--since", metavar="DATE", help="only ratings and rewrites made from this date (ISO)")
    stages.add_argument("--expect-sha256", help="refuse to start unless the set is this one (the one previewed)")
