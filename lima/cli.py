"""The `lima` command. Each subcommand is a thin door into the module that does the work."""

from __future__ import annotations

import argparse
import sys


def _serve(args) -> int:
    from service.main import main

    return main(args)


def _models_prepare(args) -> int:
    from service import embedded_model

    try:
        print(embedded_model.prepare(args.dest))
    except embedded_model.PrepareError as exc:
        print(f"lima models prepare: {exc}", file=sys.stderr)
        return 2
    return 0


def _models_list(args) -> int:
    from lima.store import connect
    from lima.store.registry import registered
    from service import embedded_model

    path = embedded_model.default_path()
    print(f"base\t{path}\t{'prepared' if embedded_model.is_prepared(path) else 'not prepared (lima models prepare)'}")
    for name, folder in registered(connect()).items():
        print(f"{name}\t{folder}")
    return 0


def _dialogues_check(args) -> int:
    from dialogues.check import main

    return main(args)


def _up(args) -> int:
    from ui.launch import main

    return main(args)


def _report(args) -> int:
    from evaluation.report import main

    return main(args)


def _judge(args) -> int:
    from evaluation.pairwise import main

    return main(args)


def _replay(args) -> int:
    from evaluation.replay import main

    return main(args)


def _train(args) -> int:
    from training.train import main

    return main(args)


def _runs_list(args) -> int:
    from lima.store import connect
    from training import runs

    for row in runs.history(connect(), args.limit):
        progress = f"step {row['step'] or 0}/{row['max_steps'] or '?'}"
        loss = f"loss {row['loss']:.3f}" if row["loss"] is not None else ""
        print(f"{row['id']}\t{row['status']}\t{row['variant']}\t{row['preset']}\t{progress}\t{loss}\t"
              f"{row['error'] or row['model_path'] or ''}")
    return 0


def _runs_cancel(args) -> int:
    from lima.store import connect
    from training import runs

    if not runs.request_cancel(connect(), args.run_id):
        print(f"lima runs cancel: run {args.run_id} is not running", file=sys.stderr)
        return 1
    print(f"asked run {args.run_id} to stop at its next step")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lima", description="LIMA Studio: chat, rate, retrain, compare.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from service.main import add_arguments as serve_arguments

    serve = sub.add_parser("serve", help="run the OpenAI-compatible chat service")
    serve_arguments(serve)
    serve.set_defaults(func=_serve)

    from ui.launch import add_arguments as up_arguments

    up = sub.add_parser("up", help="start the chat service and the workbench UI, print the URL")
    up_arguments(up)
    up.set_defaults(func=_up)

    models = sub.add_parser("models", help="prepare and list models")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prepare = models_sub.add_parser("prepare", help="download and convert the embedded SmolLM2-135M-Instruct once")
    prepare.add_argument("--dest", help="folder to write (default: $LIMA_HOME/models/smollm2-135m-instruct)")
    prepare.set_defaults(func=_models_prepare)
    listing = models_sub.add_parser("list", help="show the embedded model and every registered model")
    listing.set_defaults(func=_models_list)

    from dialogues.check import add_arguments as check_arguments

    dialogues = sub.add_parser("dialogues", help="validate and inspect the dialogue chains and openers")
    dialogues_sub = dialogues.add_subparsers(dest="dialogues_command", required=True, metavar="ACTION")
    check = dialogues_sub.add_parser("check", help="validate chains and openers, print counts and length statistics")
    check_arguments(check)
    check.set_defaults(func=_dialogues_check)

    from training.train import add_arguments as train_arguments

    train = sub.add_parser("train", help="train the zero-shot or dialogue variant with the LIMA recipe (TRL)")
    train_arguments(train)
    train.set_defaults(func=_train)

    from evaluation.report import add_arguments as report_arguments

    report = sub.add_parser("report", help="print the side-by-side table; write Markdown and the PNG chart")
    report_arguments(report)
    report.set_defaults(func=_report)

    from evaluation.pairwise import add_arguments as judge_arguments

    judge = sub.add_parser("judge", help="run an LLM judge (OpenAI protocol) over saved comparisons and turns")
    judge_arguments(judge)
    judge.set_defaults(func=_judge)

    from evaluation.replay import add_arguments as replay_arguments

    replay = sub.add_parser("replay", help="re-run a saved conversation's user turns on another model")
    replay_arguments(replay)
    replay.set_defaults(func=_replay)

    runs = sub.add_parser("runs", help="list or cancel training runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    runs_list = runs_sub.add_parser("list", help="show recent runs with status, progress and result")
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.set_defaults(func=_runs_list)
    cancel = runs_sub.add_parser("cancel", help="ask a running training run to stop at its next step")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=_runs_cancel)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
