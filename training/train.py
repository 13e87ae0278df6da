"""`lima train`: train a LIMA variant with TRL's SFTTrainer, or, with ``--stage kto|dpo``, learn on top
of a model from the ratings themselves.

    lima train --variant dialogue --preset cpu-demo                       # CPU, about 9 minutes
    lima train --variant dialogue --stage kto                             # learn from the ratings
    lima train --variant dialogue --stage kto --from base                 # ... on top of the base
    lima train --variant zero-shot --preset lima-paper --base Qwen/Qwen2.5-7B --lima GAIR/lima
    accelerate launch --config_file training/accelerate/fsdp.yaml -m training.train \\
        --variant dialogue --preset lima-paper                            # several GPUs or nodes

The flags become one ``TrainRequest`` (``training/request.py``); ``training/sft.py`` and
``training/preference.py`` run it; what both share is ``training/common.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dialogues.jsonl import DataError
from lima import children
from lima.model_files import ModelLoadError
from lima.store import runs
from training import common, request as requests
from training.request import TrainRequest

add_arguments = requests.add_arguments


def run(request: TrainRequest) -> str:
    """The run ``request`` asks for; the summary line."""
    if request.stage == "sft":
        from training import sft

        return sft.run(request)
    from training import preference

    return preference.run(request)


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    children.exit_with_parent()  # started from a workbench that is gone: cancel, do not train on alone
    try:
        print(run(TrainRequest.from_args(args)))
    except (DataError, ValueError, common.TrainingError, ModelLoadError, runs.RunRefused) as exc:
        # PreferenceError is a ValueError: a set too small or all one label, said as it is
        print(f"lima train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lima train: interrupted; the run is recorded as cancelled", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
