"""Presets hold the paper's numbers; flags and --set override them; bad values are named."""

import pytest

from training import recipe as recipes


def test_lima_paper_preset_is_the_papers_recipe():
    r = recipes.load("lima-paper")
    assert r.eot_token == "<|eot|>"
    assert r.train.epochs == 15
    assert (r.train.adam_beta1, r.train.adam_beta2, r.train.weight_decay) == (0.9, 0.95, 0.1)
    assert (r.train.learning_rate, r.train.final_learning_rate, r.train.warmup_steps) == (1e-5, 1e-6, 0)
    assert r.batch_size(65_000_000_000) == 32 and r.batch_size(7_000_000_000) == 64
    assert r.data.max_length == 2048
    assert r.dropout_top(65_000_000_000) == 0.3 and r.dropout_top(7_000_000_000) == 0.2
    assert r.checkpoints.epochs == (5, 10) and r.checkpoints.dev_prompts == 50


def test_cpu_demo_keeps_every_chain_and_states_its_subset():
    r = recipes.load("cpu-demo")
    assert r.base == "embedded" and r.data.lima_examples == 24
    assert "24 LIMA examples + every dialogue chain" in r.description


def test_overrides():
    r = recipes.load("cpu-demo", ["train.epochs=3", "checkpoints.epochs=[2, 3]"], base="/models/x",
                     train__max_steps=5, lora__enabled=True)
    assert r.train.epochs == 3 and r.checkpoints.epochs == (2, 3)
    assert r.base == "/models/x" and r.train.max_steps == 5 and r.lora.enabled


@pytest.mark.parametrize("preset, overrides, message", [
    ("few-shot", [], "unknown preset 'few-shot': choose one of cpu-demo, lima-paper"),
    ("cpu-demo", ["train.epochs=-1"], "train.epochs: Input should be greater than 0"),
    ("cpu-demo", ["train.epoch=3"], "train.epoch: Extra inputs are not permitted"),
    ("cpu-demo", ["nope.x=1"], "'nope' is not a section of the recipe"),
    ("cpu-demo", ["checkpoints.epochs=[4, 2]"], "checkpoints.epochs must be [first, last]"),
    ("cpu-demo", ["train.epochs"], "--set expects KEY=VALUE"),
])
def test_bad_recipes_are_refused_by_name(preset, overrides, message):
    with pytest.raises(ValueError) as err:
        recipes.load(preset, overrides)
    assert message in str(err.value)


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
