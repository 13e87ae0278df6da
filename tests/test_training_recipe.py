"""One recipe: the paper's numbers once in base.yaml, presets override what differs, TRL fields pass
through as they are, flags and --set override; bad values and unknown fields are named."""

import re
from pathlib import Path

import pytest
import yaml

from lima.chat_format import EOT
from lima.paper import DECODING
from training import recipe as recipes


def test_lima_paper_preset_is_the_papers_recipe():
    r = recipes.load("lima-paper")
    assert r.lima.eot_token == EOT
    assert r.sft["num_train_epochs"] == 15
    assert (r.sft["adam_beta1"], r.sft["adam_beta2"], r.sft["weight_decay"]) == (0.9, 0.95, 0.1)
    assert (r.sft["learning_rate"], r.sft["lr_scheduler_type"], r.sft["warmup_steps"]) == (1e-5, "polynomial", 0)
    assert r.sft["lr_scheduler_kwargs"] == {"lr_end": 1e-6, "power": 1.0}  # linear to 1e-6
    assert r.batch_size(65_000_000_000) == 32 and r.batch_size(7_000_000_000) == 64
    assert r.max_length == 2048
    assert r.dropout_top(65_000_000_000) == 0.3 and r.dropout_top(7_000_000_000) == 0.2
    assert r.lima.checkpoints.epochs == (5, 10) and r.lima.checkpoints.dev_prompts == 50
    assert r.lima.decoding.model_dump() == {k: v for k, v in DECODING.items() if k != "max_tokens"}


def test_presets_inherit_the_base_and_state_only_what_differs():
    base = yaml.safe_load((recipes.PRESETS_DIR / "base.yaml").read_text())
    for name in recipes.presets():
        preset = yaml.safe_load((recipes.PRESETS_DIR / f"{name}.yaml").read_text())
        assert preset["inherits"] == "base"
        for section in ("sft", "lima"):
            for key, value in (preset.get(section) or {}).items():
                assert base[section].get(key) != value, f"{name}.yaml restates {section}.{key}"
    assert "base" not in recipes.presets()


def test_each_lima_number_has_one_home():
    """The paper's numbers are written in base.yaml only: no preset, no Python module repeats them."""
    texts = {p: p.read_text() for p in [*recipes.PRESETS_DIR.glob("*.yaml"), *Path("training").glob("*.py")]
             if p.name != "base.yaml"}
    for number in ("1.0e-5", "1e-5", "1.0e-6", "0.95", "0.3"):
        assert not [p for p, text in texts.items() if re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", text)], number
    assert not [p for p, text in texts.items() if EOT in text]


def test_cpu_demo_keeps_every_chain_and_states_its_subset():
    r = recipes.load("cpu-demo")
    assert r.base == "embedded" and r.lima.lima_examples == 12
    assert r.sft["num_train_epochs"] == 2 and r.sft["adam_beta2"] == 0.95  # its own, and the paper's
    assert "12 LIMA examples + every dialogue chain" in r.description
    assert "2 epochs" in r.summary() and "lr 1e-05 -> 1e-06 linear" in r.summary()


def test_overrides():
    r = recipes.load("cpu-demo", ["sft.num_train_epochs=3", "lima.checkpoints.epochs=[2, 3]", "sft.optim=adamw_torch"],
                     base="/models/x", sft__max_steps=5, lima__lora__enabled=True)
    assert r.sft["num_train_epochs"] == 3 and r.lima.checkpoints.epochs == (2, 3)
    assert r.sft["optim"] == "adamw_torch"  # any SFTConfig field passes through
    assert r.base == "/models/x" and r.sft["max_steps"] == 5 and r.lima.lora.enabled


def test_a_users_preset_inherits_a_shipped_one(tmp_path, tiny_base):
    path = tmp_path / "tiny.yaml"
    from tests.helpers.training import tiny_preset

    path.write_text(yaml.safe_dump(tiny_preset(tiny_base)))
    r = recipes.load(str(path))
    assert r.base == str(tiny_base) and r.lima.lima_examples == 6 and r.sft["bf16"] is False
    assert r.sft["adam_beta2"] == 0.95 and r.lima.residual_dropout.top == 0.05  # from cpu-demo and base
    assert r.lima.behaviour.max_new_tokens == 8 and r.lima.behaviour.openers == 1  # nested blocks too


@pytest.mark.parametrize("preset, overrides, message", [
    ("few-shot", [], "unknown preset 'few-shot': choose one of cpu-demo, lima-paper"),
    ("base", [], "unknown preset 'base'"),
    ("cpu-demo", ["lima.batch_size=0"], "lima.batch_size: Input should be greater than or equal to 1"),
    ("cpu-demo", ["lima.batchsize=3"], "lima.batchsize: Extra inputs are not permitted"),
    ("cpu-demo", ["sft.num_train_epoch=3"], "sft.num_train_epoch is not a field of TRL's SFTConfig (did you mean "
                                            "num_train_epochs?)"),
    ("cpu-demo", ["sft.output_dir=/tmp/x"], "sft.output_dir is set by `lima train` itself"),
    ("cpu-demo", ["nope.x=1"], "'nope' is not a section of the recipe"),
    ("cpu-demo", ["lima.checkpoints.epochs=[4, 2]"], "lima.checkpoints.epochs must be [first, last]"),
    ("cpu-demo", ["sft.num_train_epochs"], "--set expects KEY=VALUE"),
])
def test_bad_recipes_are_refused_by_name(preset, overrides, message):
    with pytest.raises(ValueError) as err:
        recipes.load(preset, overrides)
    assert message in str(err.value)


def test_a_preset_must_inherit_a_real_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherits: nothing-like-it\ndescription: x\nbase: embedded\n")
    with pytest.raises(ValueError, match="inherits 'nothing-like-it', which is not a recipe"):
        recipes.load(str(path))


def test_accelerate_configs_parse_and_use_known_keys():
    import inspect
    from pathlib import Path

    import accelerate.commands.config.cluster as cluster
    from accelerate.commands.config.config_args import load_config_from_file

    known = inspect.getsource(cluster)
    folder = Path(recipes.__file__).parent / "accelerate"
    kinds = {}
    for path in sorted(folder.glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.stem] = str(config.distributed_type)
        assert config.mixed_precision == "bf16" and config.num_processes >= 8
        plugin = config.fsdp_config or config.deepspeed_config
        for key in plugin:
            assert f'"{key}"' in known or f"'{key}'" in known, f"{path.name}: unknown key {key}"
        text = path.read_text()
        assert "accelerate launch --config_file" in text and "training.train" in text
    assert kinds == {"deepspeed_zero3": "DistributedType.DEEPSPEED", "fsdp": "DistributedType.FSDP"}
