"""Every run measures its model beside the model it came from; a clearly worse one says so everywhere."""

import json
from pathlib import Path

from studio import cli
from lima.store import behaviour as store, connect
from lima.store.registry import registered, warnings
from lima.store import runs
from training import train
from tests.helpers.training import train_args, write_lima

# 2 dev prompts + 1 opener with 1 follow-up (tests/helpers/training.py's TINY numbers)
REPLIES = 2 + 1 * (1 + 1)


def test_a_run_measures_its_model_beside_the_base_and_shows_it(tiny_base, tmp_path, capsys):
    lima = write_lima(tmp_path / "lima.jsonl", singles=12)
    train.run(train_args(tiny_base, lima, variant="dialogue"))
    db = connect()
    [first] = runs.history(db)
    measured = store.for_run(db, first.id)
    parent, model = measured["parent"], measured["model"]
    assert (parent.model, parent.path) == ("base", str(tiny_base)) and parent.measured_in == first.id
    assert (model.model, model.path) == ("lima-dialogue", registered(db)["lima-dialogue"])
    for m in (parent, model):
        f = m.figures
        assert f.replies == REPLIES and f.max_new_tokens == 8 and 0 <= f.ended <= 1 and 0 <= f.loops <= 1
        assert 1 <= f.median_tokens <= 8 and f.references >= 2 and 0 <= f.p_end <= 1
        replies = store.replies(db, m)
        assert [r.source for r in replies].count("opener") == 2 and all(1 <= r.tokens <= 8 for r in replies)
        assert sum(r.ended for r in replies) / REPLIES == f.ended  # the figures are the replies' own
    assert parent.figures.p_eot is None and model.figures.p_eot is not None  # only the new model has EOT
    record = runs.get(db, first.id)
    fits = record.eot_fit  # the EOT row fitted before training and again at each epoch's end
    assert [f["epoch"] for f in fits] == [0, 1, 2] and all(f["answer_ends"] >= 1 for f in fits)
    assert record.activity is None
    provenance = json.loads(open(f"{model.path}/lima_run.json").read())
    assert provenance["eot_fit"] == record.eot_fit and len(provenance["example_ids"]) == 6 + 30

    # a second run from the same base with the same settings reuses the base's figures (a zero-shot
    # run would not: it holds out the chains too, other references, so the base is measured again)
    train.run(train_args(tiny_base, lima, variant="dialogue"))
    second = runs.history(db)[0]
    again = store.for_run(db, second.id)
    assert again["parent"].measured_in == first.id and again["parent"].figures == parent.figures
    assert again["model"].measured_in == second.id

    capsys.readouterr()
    chart = tmp_path / "chart.png"
    assert cli.main(["runs", "show", first.id, "--chart", str(chart)]) == 0
    shown = capsys.readouterr().out
    assert "| | base (parent) | lima-dialogue (new) |" in shown and "| ended by themselves |" in shown
    assert f"| replies | {REPLIES} | {REPLIES} |" in shown and "capped at 8 new tokens" in shown
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["runs", "show", "no-such-run"]) == 1


def test_a_model_that_learnt_to_ramble_is_registered_with_a_warning(tiny_base, tmp_path, capsys):
    """A parent that answers in a few tokens and ends, then a run on answers far longer than the
    cap: the new model no longer ends by itself, and every list says so."""
    heavy = ["sft.num_train_epochs=30", "sft.learning_rate=3e-3",
             "sft.lr_scheduler_kwargs={lr_end: 1.0e-3, power: 1.0}", "lima.checkpoints.epochs=[30, 30]",
             "lima.checkpoints.dev_prompts=0", "lima.lima_examples=2", "lima.behaviour.max_new_tokens=40",
             "lima.behaviour.references=0"]
    short = write_lima(tmp_path / "short.jsonl", singles=2, multi=0)
    train.run(train_args(tiny_base, short, variant="zero-shot", extra=heavy))
    db = connect()
    concise = registered(db)["lima-zero-shot"]
    parent = store.for_run(db, runs.history(db)[0].id)["model"].figures
    assert parent.ended >= 0.75  # it learnt to end its short answers

    long_answer = " ".join(["first, the quick brown fox jumps over the lazy dog."] * 12)
    rambling = tmp_path / "long.jsonl"
    rambling.write_text("".join(json.dumps({"conversations": [q, long_answer], "source": "wikihow"}) + "\n"
                                for q in ("how do i boil an egg?", "explain why the fox jumps")))
    summary = train.run(train_args(Path(concise), rambling, variant="zero-shot", extra=heavy))
    run = runs.history(db)[0]
    measured = store.for_run(db, run.id)
    assert measured["parent"].path == concise and measured["model"].figures.ended <= parent.ended - 0.5
    record = runs.get(db, run.id)
    assert record.status == "done" and record.warning.startswith("worse than base: ends ")
    assert "warning: worse than base" in summary
    assert registered(db)["lima-zero-shot"] == record.model_path  # still registered ...
    assert warnings(db)["lima-zero-shot"] == record.warning  # ... with the reasons on it
    capsys.readouterr()
    cli.main(["models", "list"])
    assert f"lima-zero-shot\t{record.model_path}\t⚠ worse than base: ends" in capsys.readouterr().out
    cli.main(["runs", "list"])
    assert "⚠ worse than base" in capsys.readouterr().out


def test_a_cancel_while_measuring_stops_the_measurement_and_registers_nothing(tiny_base, tmp_path, lima_home):
    """The measurement runs in a process of its own: SIGTERM to `lima train` while it measures
    (the workbench's stop) is a cancel it obeys, and no process of the run is left behind."""
    import subprocess
    import time

    import psutil

    from lima.children import lima_command
    from tests.helpers.training import TINY

    lima = write_lima(tmp_path / "lima.jsonl")
    long = ["lima.behaviour.dev_prompts=50", "lima.behaviour.openers=10", "lima.behaviour.follow_ups=3",
            "lima.behaviour.max_new_tokens=2000", "lima.behaviour.max_batch=1", "lima.behaviour.references=0",
            "lima.behaviour.apart=true"]  # as real models are measured (TINY measures in process)
    process = subprocess.Popen([*lima_command(), "train", "--variant", "zero-shot", "--lima", str(lima),
                                "--base", str(tiny_base), *[f"--set={s}" for s in [*TINY, *long]]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = connect()
    deadline, run = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None:
        history = runs.history(db)
        run = history[0] if history else None
        if run and (run.activity or "").startswith("measuring"):
            break
        time.sleep(0.2)
    assert run is not None and (run.activity or "").startswith("measuring"), process.communicate()[0][-3000:]
    family = psutil.Process(process.pid).children(recursive=True)
    assert family  # the measurement's own process
    process.terminate()
    output = process.communicate(timeout=120)[0]
    record = runs.get(db, run.id)
    assert record.status == "cancelled" and "while measuring" in record.error, output[-3000:]
    assert registered(db) == {} and not list((lima_home / "models").glob("zero-shot-*"))
    assert psutil.wait_procs(family, timeout=30)[1] == []  # none alive
