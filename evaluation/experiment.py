"""`lima experiment`: the paper's section 6 in one command, with a judge on the paper's own scale.

    lima experiment [--base MODEL] [--preset cpu-demo] [--judge-url URL --judge-model NAME] [--reuse]
                    [--out DIR] [--max-tokens N] [-- lima serve options]

1. train   the zero-shot and the dialogue variant with the preset (`lima train`, each in its own
           process), or with --reuse the ones already registered;
2. converse  a `lima serve` of its own serves both; each of the 10 evaluation openers and its
           scripted follow-ups is held with each model at the paper's decoding (seeded);
3. rate    the judge rates every assistant turn Fail / Pass / Excellent, with the paper's definitions
           in the prompt and the whole conversation so far as context; stored as ratings by rater
           `judge:<model>` (never a person's), each linked to the judge's raw answer; an answer
           without a label is counted as unparsed, never guessed;
4. compare the judge compares each pair of conversations, asked in both orders;
5. report  section 6's table for the judge's ratings beside any human ratings of the same
           conversations, with their agreement: Markdown and chart in --out.

Without --judge-url the judge is `base` on the experiment's own service: the model both variants
were trained from, so neither judges itself. A small judge's ratings are a demonstration, not a
measurement, and the report says so.

Every step is recorded (experiments, experiment_conversations, judgments, keyed by a hash of each
question): the same command after an interruption resumes where it stopped, keeping finished
conversations and never asking the judge a question twice.
"""

from __future__ import annotations

import os
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dialogues import project
from evaluation import agreement as agreements, pairwise, report as reports
from evaluation.judge import (RATING_SYSTEM, Judge, JudgeUnavailable, parse_label, rating_prompt, uncertainty,
                              weighted_rating)
from lima import children, conversation as conv, home, paper, service_child
from lima.paper import DECODING, DIALOGUE, ZERO_SHOT
from lima.service_client import ServiceClient, ServiceProblem
from lima.store import chatlog, comparisons as comparison_store, connect, experiments, judgments, registry, utcnow
from lima.store.registry import registered

STAGES = ("train", "converse", "rate", "compare", "report")
DEMONSTRATION = ("The judge is {judge}, a small model on this machine: its ratings show the experiment running "
                 "end to end; they are a demonstration, not a measurement. Give --judge-url and --judge-model "
                 "for a capable judge.")


class ExperimentError(RuntimeError):
    """The experiment cannot go on; the message says why and what to do."""


# -- the record ----------------------------------------------------------------------------------

def latest(db) -> experiments.Experiment | None:
    return experiments.latest(db)


# -- 1. train ------------------------------------------------------------------------------------

def train(db, experiment: experiments.Experiment, preset: str, base: str, reuse: bool) -> dict[str, str]:
    """{variant: model folder}, training what this experiment has not got yet."""
    models = dict(experiment.models)
    with tqdm(total=len(paper.VARIANTS), desc="1/5 train", unit="variant") as bar:
        for variant in paper.VARIANTS:
            name = paper.model_name(variant)
            if variant not in models and reuse and name in registered(db):
                models[variant] = registered(db)[name]
            if variant not in models:
                bar.set_postfix_str(f"training {name} ({preset})")
                models[variant] = _train_one(db, variant, preset, base)
            experiments.update(db, experiment.id, models=models)
            bar.update(1)
    return models


def _train_one(db, variant: str, preset: str, base: str) -> str:
    cmd = [*children.lima_command(), "train", "--variant", variant, "--preset", preset]
    if base != "embedded":
        cmd += ["--base", base]
    started = utcnow()
    process = children.spawn(cmd)  # its progress bars show on this console
    try:
        code = process.wait()
    finally:
        children.stop(process)
    # A run that finished registered its model under the variant's name (after `started`).
    row = registry.get(db, paper.model_name(variant)) if code == 0 else None
    if row is None or row.registered < started:
        raise ExperimentError(f"training the {variant} variant failed (`lima train` exited with code {code}; "
                              "its message is above, and `lima runs list` has the run)")
    return row.path


# -- 2. converse ---------------------------------------------------------------------------------

def serve(named: dict[str, str], serve_args: list[str], timeout: float = 900,
          log_name: str = "experiment-serve") -> service_child.ServiceChild:
    """A `lima serve` of its own (never the registry's), serving ``named`` (name -> folder) beside
    the embedded base unless ``serve_args`` say otherwise, without a key (it listens on loopback
    only); returned once every model is loaded."""
    specs = [arg for name, path in named.items() for arg in ("--model", f"{name}={path}")]
    log = home.home() / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        return service_child.start(["--no-registry", *specs, *serve_args], log=log, until="loaded", timeout=timeout)
    except service_child.ServiceStartError as exc:
        raise ExperimentError(str(exc)) from None


def converse(db, experiment_id: str, client: ServiceClient, max_tokens: int | None) -> None:
    """Hold every opener with both models, the two at once (the service batches them: on two CPU
    cores two streams give about 1.8 times the tokens of one); a finished conversation is never
    held again."""
    openers = project.openers()
    done = {(i.opener_id, i.model) for i in experiments.held(db, experiment_id) if i.ended}
    todo = [(o, m) for o in openers for m in (ZERO_SHOT, DIALOGUE) if (o.id, m) not in done]
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="converse")
    try:
        with tqdm(total=2 * len(openers), initial=len(done), desc="2/5 converse", unit="conversation") as bar:
            held = {pool.submit(_hold, client, o, m, max_tokens): (o, m) for o, m in todo}
            for future in as_completed(held):
                opener, model = held[future]
                experiments.record_held(db, experiment_id, opener.id, model, future.result())
                bar.set_postfix_str(f"{opener.id} with {model} done")
                bar.update(1)
    finally:
        # on a failure or a stop, start nothing new; replies in flight end when the service stops
        pool.shutdown(wait=False, cancel_futures=True)
    for opener in openers:  # the pair, for the judge's side-by-side verdict and the Compare tab
        pair = {i.model: i for i in experiments.held(db, experiment_id) if i.opener_id == opener.id}
        if len(pair) == 2 and not pair[ZERO_SHOT].comparison_id:
            comparison_id = comparison_store.create(db, ZERO_SHOT, DIALOGUE, pair[ZERO_SHOT].conversation_id,
                                               pair[DIALOGUE].conversation_id, opener.id, kind="experiment")
            for model in (ZERO_SHOT, DIALOGUE):
                experiments.link_comparison(db, experiment_id, opener.id, model, comparison_id)


def _hold(client: ServiceClient, opener, model: str, max_tokens: int | None) -> str:
    """One conversation: the opener, then each scripted follow-up, at the paper's decoding with a
    seed per (opener, model) so a rerun asks the same. It ends early when the context is full."""
    chat = conv.Chat()
    seed = zlib.crc32(f"{opener.id}/{model}".encode())
    params = {k: v for k, v in DECODING.items() if k != "max_tokens"} | {"max_tokens": max_tokens, "seed": seed}
    for text in (opener.message, *opener.follow_ups):
        try:
            for chat in conv.send(client, chat, text, model, None, opener.id, source="experiment", **params):
                pass
        except ServiceProblem as problem:
            if "context" in str(problem) and chat.conversation_id:
                tqdm.write(f"{opener.id} with {model}: stopped before '{text[:40]}': {problem}")
                break
            raise ExperimentError(f"{opener.id} with {model}: {problem}") from problem
    return chat.conversation_id


# -- 3. rate, 4. compare --------------------------------------------------------------------------

def rate(db, experiment_id: str, runner: pairwise.Runner) -> int:
    """The judge's label for every assistant turn; returns how many answers had none (unparsed)."""
    turns = [(i, chatlog.turns(db, i.conversation_id)) for i in experiments.held(db, experiment_id)]
    total = sum(1 for _, ts in turns for t in ts if t["role"] == "assistant")
    unparsed = 0
    with tqdm(total=total, desc="3/5 rate", unit="turn") as bar:
        for _, conversation in turns:
            history: list[dict[str, str]] = []
            for turn in conversation:
                if turn["role"] == "assistant":
                    prompt = rating_prompt(history, turn["content"])
                    raw = runner.ask("paper-rating", RATING_SYSTEM, prompt, parse=parse_label,
                                     choices=list(paper.LABELS), turn_id=turn["id"])
                    label = parse_label(raw)
                    if label is None:
                        unparsed += 1
                    else:
                        chatlog.judge_rate(db, turn["id"], label, runner.judge.model,
                                           runner.key("paper-rating", RATING_SYSTEM, prompt, list(paper.LABELS)))
                    bar.update(1)
                history.append({"role": turn["role"], "content": turn["content"]})
    return unparsed


def compare(db, experiment_id: str, runner: pairwise.Runner) -> None:
    ids = sorted({i.comparison_id for i in experiments.held(db, experiment_id) if i.comparison_id})
    for comparison_id in tqdm(ids, desc="4/5 compare", unit="pair"):
        row = comparison_store.get(db, comparison_id)
        runner.pair("pairwise-conversation", pairwise.CONVERSATION_TEMPLATE, comparison_id, 0,
                    pairwise.transcript(chatlog.turns(db, row.left_conversation)),
                    pairwise.transcript(chatlog.turns(db, row.right_conversation)))


# -- 5. report -----------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """The experiment as it stands: its record, the judge's and people's tables, the agreement."""

    experiment: experiments.Experiment
    judged: reports.Report
    people: reports.Report
    progress: dict = field(default_factory=dict)
    agreement: dict = field(default_factory=dict)
    raters: agreements.Agreement | None = None  # judge and people on the same turns, with alpha


def snapshot(db, experiment: experiments.Experiment) -> Snapshot:
    """Built from the log at any moment (the Report tab draws it while the experiment runs)."""
    held = experiments.held(db, experiment.id)
    conversations = [c for c in (chatlog.conversation(db, i.conversation_id) for i in held) if c]
    judge_model = experiment.judge_model or "base"
    by_judge = chatlog.judge_ratings(db, judge_model)
    judged_conversations = [{**c, "turns": [{**t, "rating": by_judge.get(t["id"])} for t in c["turns"]]}
                            for c in conversations]
    turn_ids = {t["id"] for c in conversations for t in c["turns"] if t["role"] == "assistant"}
    asked = [j for j in judgments.of_protocol(db, "paper-rating", judge_model) if j.turn_id in turn_ids]
    unparsed = sum(1 for j in asked if j.result == "None")
    verdicts = _judge_verdicts(db, held, judge_model)
    pairs = sorted({i.comparison_id for i in held if i.comparison_id})
    people_verdicts = reports.count_verdicts([comparison_store.get(db, c) for c in pairs]) or \
        [reports.Verdicts(ZERO_SHOT, DIALOGUE)]
    scope = f"experiment {experiment.id}: the 10 evaluation openers with their follow-ups, each model"
    cap = experiment.max_tokens
    notes = [f"Base {experiment.base}, preset {experiment.preset}; the paper's decoding"
             + (f", replies capped at {cap} new tokens" if cap else "") + f"; judge {judge_model}"
             + (f" at {experiment.judge_url}" if experiment.judge_url else " on the experiment's own service")
             + f"; {unparsed} judge answers unparsed (not counted)."]
    notes += _weighted_notes(asked, {t["id"]: c["model"] for c in conversations for t in c["turns"]})
    if not experiment.judge_url:
        notes.insert(0, DEMONSTRATION.format(judge=judge_model))
    judged = reports.Report(reports.tally(judged_conversations), [verdicts] if verdicts.total else [],
                            title=f"Section 6, rated by the judge `judge:{judge_model}`", scope=scope, notes=notes,
                            when_empty="No turn rated by the judge yet.")
    people = reports.Report(reports.tally(conversations), [v for v in people_verdicts if v.total],
                            title="Section 6, rated by people (the same conversations)", scope=scope)
    both = [(by_judge[t["id"]], t["rating"]) for c in conversations for t in c["turns"]
            if t["role"] == "assistant" and t["rating"] and t["id"] in by_judge]
    agreement = {"turns": len(both), "same": sum(1 for j, p in both if j == p)}
    raters = agreements.measure([r for r in chatlog.ratings_by_rater(db) if r["turn_id"] in turn_ids],
                                agreements.turn_pairs(db, [comparison_store.get(db, c) for c in pairs]))
    progress = {"stage": experiment.stage, "status": experiment.status, "conversations": len(held),
                "of": 2 * len(project.openers()), "turns": len(turn_ids), "rated": len(asked), "unparsed": unparsed,
                "pairs": verdicts.total + verdicts.unparsed}
    return Snapshot(experiment, judged, people, progress, agreement, raters)


def _weighted_notes(asked: list[judgments.Judgment], model_of: dict[int, str]) -> list[str]:
    """Per model, the judge's probability-weighted rating beside its chosen labels' mean, and how many
    labels were near ties or unsure; nothing where the judge gave no probabilities."""
    lines = []
    for model in sorted({model_of[j.turn_id] for j in asked if j.turn_id in model_of}):
        mine = [j for j in asked if model_of.get(j.turn_id) == model and j.probabilities and j.result in paper.LABELS]
        if not mine:
            continue
        weighted = sum(weighted_rating(j.probabilities) for j in mine) / len(mine)
        chosen = sum(paper.LABELS.index(j.result) + 1 for j in mine) / len(mine)
        doubts = [uncertainty(j.probabilities) for j in mine]
        lines.append(f"{model}: the judge's probability-weighted rating is {weighted:.2f} (Fail 1, Pass 2, "
                     f"Excellent 3) beside {chosen:.2f} for the labels it chose, over {len(mine)} turns; "
                     f"{doubts.count('near tie')} near ties (the two likeliest labels within 10 points), "
                     f"{doubts.count('unsure')} unsure (no label at 60%).")
    return lines


@dataclass
class _Verdicts(reports.Verdicts):
    unparsed: int = 0


def _judge_verdicts(db, held: list[experiments.Held], judge_model: str) -> _Verdicts:
    tally = _Verdicts(ZERO_SHOT, DIALOGUE)
    for comparison_id in sorted({i.comparison_id for i in held if i.comparison_id}):
        orders = {j.order: j.result for j in judgments.of_protocol(db, "pairwise-conversation", judge_model,
                                                                   comparison_id)}
        if len(orders) == 2:
            verdict = pairwise.combine(orders["left-first"], orders["right-first"])
            if verdict == "unparsed":
                tally.unparsed += 1
            else:
                tally.add(verdict)
    return tally


def markdown(shot: Snapshot, chart: str | None = None) -> str:
    text = reports.markdown(shot.judged, chart)
    if shot.judged.verdicts and shot.judged.verdicts[0].unparsed:
        text += f"\n{shot.judged.verdicts[0].unparsed} pair verdicts unparsed (not counted).\n"
    if shot.people.empty:
        text += ("\n## People\n\nNo person has rated these conversations yet: reopen one in the Chat tab "
                 "(\"Reopen a conversation\") and rate its replies to see the judge beside people.\n")
    else:
        text += "\n" + reports.markdown(shot.people, None).replace("# ", "## ", 1)
        a = shot.agreement
        share = f"{100 * a['same'] / a['turns']:.1f}%" if a["turns"] else "n/a"
        text += f"\nJudge and people gave the same label on {a['same']} of {a['turns']} turns both rated ({share}).\n"
        if shot.raters is not None:
            text += "\n" + "\n".join(agreements.markdown(shot.raters)).replace("## ", "### ", 1)
    return text


def write(shot: Snapshot, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    chart = None if shot.judged.empty else reports.draw(shot.judged, out / "ratings.png")
    path = out / "report.md"
    path.write_text(markdown(shot, chart.name if chart else None))
    return path


# -- the command ---------------------------------------------------------------------------------

def run(args) -> Snapshot:
    db = connect()
    experiment, resumed = experiments.start_or_resume(db, STAGES[0], args.base, args.preset, args.judge_url,
                                                      args.judge_model, args.max_tokens)
    print(f"{'resuming' if resumed else 'starting'} experiment {experiment.id}", flush=True)
    service = None
    try:
        experiments.update(db, experiment.id, stage="train")
        models = train(db, experiment, args.preset, args.base, args.reuse)
        experiments.update(db, experiment.id, stage="converse")
        served = {paper.ZERO_SHOT: models["zero-shot"], paper.DIALOGUE: models["dialogue"]}
        # `base` is served only to be the judge: with a judge of its own the base is not loaded
        if args.judge_url:
            service = serve(served, ["--base-model", "none", *args.serve_args])
        else:
            service = serve(served | ({"base": args.base} if args.base != "embedded" else {}), args.serve_args)
        url = service.url
        converse(db, experiment.id, service.client, args.max_tokens)
        # the first line is all that is read; 64 tokens leave room for the sentence of reason
        judge = Judge(args.judge_url or url + "/v1", args.judge_model or "base", args.judge_api_key or "EMPTY",
                      max_tokens=64, guided=args.judge_guided or not args.judge_url)
        runner = pairwise.Runner(db, judge)
        experiments.update(db, experiment.id, stage="rate")
        rate(db, experiment.id, runner)
        experiments.update(db, experiment.id, stage="compare")
        compare(db, experiment.id, runner)
        experiments.update(db, experiment.id, stage="report")
        out = Path(args.out) if args.out else home.home() / "experiments" / experiment.id
        shot = snapshot(db, experiments.get(db, experiment.id))
        path = write(shot, out)
        experiments.update(db, experiment.id, status="done", out_dir=str(out),
               summary={**shot.progress, "asked": runner.asked, "reused": runner.reused})
        shot.experiment = experiments.get(db, experiment.id)
        print(markdown(shot))
        print(f"asked the judge {runner.asked} questions, reused {runner.reused} stored answers; written: {path}")
        return shot
    except BaseException as exc:
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit))  # Ctrl+C, SIGTERM, SIGHUP
        experiments.update(db, experiment.id, status="interrupted" if stopped else "failed",
               error="stopped before the end; run the same command to resume" if stopped else str(exc))
        raise
    finally:
        if service is not None:
            service.stop()


def main(args) -> int:
    children.signals_exit()
    children.exit_with_parent()
    if bool(args.judge_url) != bool(args.judge_model):
        print("lima experiment: give --judge-url and --judge-model together (or neither, for the demonstration "
              "judge)", file=sys.stderr)
        return 2
    try:
        run(args)
    except (ExperimentError, JudgeUnavailable, ValueError) as exc:
        print(f"lima experiment: {exc}; run the same command again to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lima experiment: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--base", default=os.environ.get("LIMA_BASE_MODEL", "embedded"),
                        help="the base both variants are trained from (default: the embedded model)")
    parser.add_argument("--preset", default="cpu-demo", help="training preset (default: cpu-demo)")
    parser.add_argument("--judge-url", help="an OpenAI-compatible judge, e.g. http://host:8000/v1")
    parser.add_argument("--judge-model", help="the judge model's name there")
    parser.add_argument("--judge-api-key", default=os.environ.get("LIMA_JUDGE_API_KEY"))
    parser.add_argument("--judge-guided", action="store_true",
                        help="the judge answers with the label alone, chosen by `guided_choice` (vLLM and LIMA "
                             "Studio know it; always on for the default judge, the experiment's own service)")
    parser.add_argument("--reuse", action="store_true", help="use the registered lima-zero-shot and lima-dialogue "
                                                             "instead of training them")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="at most this many new tokens per reply (default: the paper's 2,048, context permitting)")
    parser.add_argument("--out", help="folder for report.md and ratings.png (default: $LIMA_HOME/experiments/<id>)")
    parser.add_argument("serve_args", nargs="*", help="options passed to the experiment's `lima serve` (after --)")
