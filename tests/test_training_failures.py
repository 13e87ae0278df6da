"""Bad bases, bad data, busy trainer, crashes and cancels: a clear reason, nothing half registered."""

import json
import shutil
import subprocess
import time

import pytest

from lima.store import connect
from lima.store.registry import register, registered
from lima.store import runs
from training import common, train
from training import recipe as recipes
from tests.helpers.training import TINY, train_args, write_lima
from lima.children import lima_command


@pytest.fixture
def lima_file(tmp_path):
    return write_lima(tmp_path / "lima.jsonl")


def lima_train(*args, **kw):
    return subprocess.run([*lima_command(), "train", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_base_that_is_not_a_model_is_refused(tmp_path, lima_file):
    (tmp_path / "notes").mkdir()
    result = lima_train("--variant", "dialogue", "--base", str(tmp_path / "notes"), "--lima", str(lima_file))
    assert result.returncode == 2
    assert "is not a model folder (no config.json)" in result.stderr
    assert runs.history(connect()) == []


@pytest.mark.parametrize("args, message", [
    (["--variant", "few-shot"], "invalid choice: 'few-shot'"),
    (["--variant", "dialogue", "--preset", "huge"], "unknown preset 'huge'"),
    (["--variant", "dialogue", "--chains", "/nowhere.jsonl"], "must be 'project', 'lima' or a chains file"),
])
def test_unknown_variant_preset_or_chains(args, message, tiny_base, lima_file):
    result = lima_train(*args, "--base", str(tiny_base), "--lima", str(lima_file))
    assert result.returncode == 2 and message in result.stderr


def test_broken_rows_are_named(tiny_base, tmp_path):
    lima = tmp_path / "lima.jsonl"
    lima.write_text(json.dumps({"conversations": ["q", "a"], "source": "x"}) + "\n{broken\n")
    result = lima_train("--variant", "zero-shot", "--base", str(tiny_base), "--lima", str(lima))
    assert result.returncode == 2 and f"{lima}:2: invalid JSON" in result.stderr


def test_zero_usable_examples_fail_the_run_with_the_reason(tiny_base, tmp_path):
    lima = tmp_path / "lima.jsonl"
    lima.write_text(json.dumps({"conversations": ["word " * 400, "answer"], "source": "x"}) + "\n")
    with pytest.raises(common.TrainingError, match="no example has assistant tokens within 128 tokens"):
        train.run(train_args(tiny_base, lima, variant="zero-shot", extra=["lima.lima_examples=1"]))
    [run] = runs.history(connect())
    assert run.status == "failed" and "no example has assistant tokens" in run.error
    assert registered(connect()) == {}


def test_a_crashing_run_is_recorded_failed_and_keeps_the_served_model(tiny_base, lima_file, tmp_path):
    db = connect()
    register(db, "lima-dialogue", "/models/previous", kind="trained", run_id="old")
    broken = tmp_path / "broken-base"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(common.TrainingError, match="could not be loaded"):
        train.run(train_args(broken, lima_file))
    [run] = runs.history(db)
    assert run.status == "failed" and "could not be loaded" in run.error and run.ended
    assert registered(db) == {"lima-dialogue": "/models/previous"}


def test_a_second_run_is_refused_while_one_runs(tiny_base, lima_file):
    db = connect()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        runs.start(db, "busy-run", variant="dialogue", preset="cpu-demo")
        db["runs"].update("busy-run", {"pid": sleeper.pid})
        with pytest.raises(runs.RunRefused, match="a retrain is already running: run busy-run"):
            train.run(train_args(tiny_base, lima_file))
    finally:
        sleeper.kill()
        sleeper.wait()
    # once its process is gone, the stale run is marked failed and a new run may start
    assert runs.running(db) is None
    assert runs.get(db, "busy-run").status == "failed"
    assert "ended without reporting" in runs.get(db, "busy-run").error


def test_cancel_stops_the_run_and_registers_nothing(tiny_base, lima_file, lima_home):
    sets = [f"--set={s}" for s in TINY] + ["--set=sft.num_train_epochs=200",
                                               "--set=lima.checkpoints.epochs=[199, 200]"]
    process = subprocess.Popen([*lima_command(), "train", "--variant", "dialogue", "--base",
                                str(tiny_base), "--lima", str(lima_file), *sets],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = connect()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        history = runs.history(db)
        if history and (history[0].step or 0) >= 2:
            break
        time.sleep(0.2)
    run_id = history[0].id
    result = subprocess.run([*lima_command(), "runs", "cancel", run_id], capture_output=True,
                            text=True)
    assert result.returncode == 0
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    record = runs.get(db, run_id)
    assert record.status == "cancelled" and record.error.startswith("cancelled at step")
    assert record.step < record.max_steps
    assert registered(db) == {}
    assert not (lima_home / "runs" / run_id).exists()


def test_not_enough_disk_is_refused_before_training(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(common.TrainingError, match=r"not enough disk space for checkpoints under .*GiB free"):
        common.check_disk(free, 4, 2, tmp_path)
    common.check_disk(1000, 4, 2, tmp_path)  # a small model fits


def test_the_base_trains_without_hub_kernels(tiny_base):
    """transformers turns on the Hub's kernels by default, and training mode on a GPU then fetches
    their code from the Hub: an offline machine could not train. The base is loaded without them,
    so putting it in training mode kernelizes nothing."""
    model, _ = common.load_base(str(tiny_base), "cpu", recipes.load("cpu-demo"))
    assert not model.use_kernels
    model.train()
    assert model.kernels_mode is None and not model.use_kernels
