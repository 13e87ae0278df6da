"""The judge over saved conversations: pairwise preference (both orders) and 1-6 helpfulness.

Pairwise (paper, section 4.1): for each Compare-tab session, the judge sees both whole
conversations, and each pair of replies to the same user message, as "Response A" and
"Response B", and answers A, B or Neither. It is asked twice with the sides swapped; agreeing
answers stand, disagreeing ones become a tie (position bias cancels), and a garbled answer in
either order makes the pair unparsed, never a verdict. Every call is stored under a hash of
exactly what was asked, so a rerun only asks what is new.

    lima judge --url http://127.0.0.1:8001/v1 --model judge-model [--pairwise] [--helpfulness]
"""

from __future__ import annotations

import hashlib
import re
import sys

from evaluation.judge import (HELPFULNESS_SYSTEM, HELPFULNESS_TEMPLATE, Answer, Judge, JudgeUnavailable,
                              QuestionRefused, parse_score)
from evaluation.stats import tie_discounted_accuracy
from lima.store import chatlog, comparisons, connect, judgments

PAIRWISE_SYSTEM = ("You compare two AI assistant responses to the same user request and say which is more "
                   "helpful: correct, complete, clear and suited to the request. You are not swayed by order or length.")
PAIRWISE_TEMPLATE = """{context}[User request]
{prompt}

[Response A]
{a}

[Response B]
{b}

Which response is better? On the first line answer exactly one of: A, B, Neither (when they are equally good or
equally bad). Then give one sentence of reason."""
CONVERSATION_TEMPLATE = """Two assistants each held a conversation with the same user, who sent the same messages.

[Conversation A]
{a}

[Conversation B]
{b}

Which assistant was better over the whole conversation? On the first line answer exactly one of: A, B, Neither.
Then give one sentence of reason."""
ANSWER = re.compile(r"^\W*(A|B|Neither|Tie)\b", re.IGNORECASE)
RANK = {"Fail": 0, "Pass": 1, "Excellent": 2}
CHOICES = ["A", "B", "Neither"]  # the answers a guided judge may give


def parse_choice(raw: str) -> str:
    """'A', 'B', 'tie' or 'unparsed' from the judge's first non-empty line."""
    line = next((l for l in raw.strip().splitlines() if l.strip()), "")
    match = ANSWER.match(line)
    if not match:
        return "unparsed"
    word = match.group(1).upper()
    return word if word in ("A", "B") else "tie"


def combine(left_first: str, right_first: str) -> str:
    """Both orders -> 'left', 'right', 'tie' or 'unparsed'."""
    if "unparsed" in (left_first, right_first):
        return "unparsed"
    as_sides = {"A": "left", "B": "right", "tie": "tie"}, {"A": "right", "B": "left", "tie": "tie"}
    first, second = as_sides[0][left_first], as_sides[1][right_first]
    return first if first == second else "tie"


def transcript(turns: list[dict]) -> str:
    return "\n".join(f"{t['role'].capitalize()}: {t['rewrite'] or t['content'] if t['role'] == 'assistant' else t['content']}"
                     for t in turns)


class Runner:
    """Asks the judge what it has not been asked yet and keeps every answer."""

    def __init__(self, db, judge: Judge):
        self.db, self.judge, self.client = db, judge, judge.client()
        self.asked = self.reused = 0

    def key(self, protocol: str, system: str, prompt: str, choices: list[str] | None = None) -> str:
        """The hash of exactly what is asked, and of whom (and, when guided, among which answers)."""
        guided = f"\nguided: {choices}" if self.judge.guided and choices else ""
        return hashlib.sha256(f"{protocol}\n{self.judge.model}\n{system}\n{prompt}{guided}".encode()).hexdigest()

    def ask(self, protocol: str, system: str, prompt: str, parse=None, choices: list[str] | None = None,
            **where) -> str:
        """The judge's raw answer, stored with ``parse(raw)`` as its result; asked only once ever."""
        key = self.key(protocol, system, prompt, choices)
        found = judgments.get(self.db, key)
        if found is not None:
            self.reused += 1
            return found.raw
        try:
            answer = self.judge.answer(system, prompt, self.client, choices)
        except QuestionRefused as exc:  # stored as the answer: it parses as nothing, so counts as unparsed
            answer = Answer(f"[no answer: {exc}]")
        self.asked += 1
        if parse is None:
            parse = (lambda r: str(parse_score(r))) if protocol == "helpfulness" else parse_choice
        judgments.add(self.db, judgments.Judgment(key, protocol, self.judge.model, str(parse(answer.text)),
                                                  answer.text, self.judge.base_url, **where,
                                                  probabilities=answer.probabilities))
        return answer.text

    def pair(self, protocol: str, template: str, comparison: str, position: int, a: str, b: str, **fields) -> str:
        left_first = parse_choice(self.ask(protocol, PAIRWISE_SYSTEM, template.format(a=a, b=b, **fields),
                                           choices=CHOICES, comparison_id=comparison, position=position,
                                           order="left-first"))
        right_first = parse_choice(self.ask(protocol, PAIRWISE_SYSTEM, template.format(a=b, b=a, **fields),
                                            choices=CHOICES, comparison_id=comparison, position=position,
                                            order="right-first"))
        return combine(left_first, right_first)

    def comparison(self, row: comparisons.Comparison) -> dict:
        left = chatlog.turns(self.db, row.left_conversation)
        right = chatlog.turns(self.db, row.right_conversation)
        result = {"conversation": self.pair("pairwise-conversation", CONVERSATION_TEMPLATE, row.id, 0,
                                            transcript(left), transcript(right)), "turns": []}
        left_replies = [t for t in left if t["role"] == "assistant"]
        right_replies = [t for t in right if t["role"] == "assistant"]
        users = [t for t in left if t["role"] == "user"]
        # Sides with different turn counts (a failed reply, an early stop) are judged on the turns both have.
        for k, (l, r) in enumerate(zip(left_replies, right_replies), start=1):
            context = "" if k == 1 else "(Earlier turns differ between the two assistants and are not shown.)\n\n"
            result["turns"].append(self.pair("pairwise-turn", PAIRWISE_TEMPLATE, row.id, k,
                                             l["rewrite"] or l["content"], r["rewrite"] or r["content"],
                                             prompt=users[k - 1]["content"], context=context))
        result["mismatched"] = len(left_replies) != len(right_replies)
        return result

    def helpfulness(self, turns: list[dict]) -> None:
        prompt = ""
        for turn in turns:
            if turn["role"] == "user":
                prompt = turn["content"]
            elif turn["content"].strip():
                self.ask("helpfulness", HELPFULNESS_SYSTEM, HELPFULNESS_TEMPLATE.format(prompt=prompt,
                                                                                       response=turn["content"]),
                         turn_id=turn["id"])


def conversation_verdicts(db) -> dict[str, list[tuple[str, str]]]:
    """Per judge model, its whole-conversation verdicts: (comparison id, 'left' | 'right' | 'tie'),
    both orders combined; an unparsed pair is no verdict."""
    answers: dict[tuple[str, str], dict[str, str]] = {}
    for judgment in judgments.of_protocol(db, "pairwise-conversation"):
        answers.setdefault((judgment.judge_model, judgment.comparison_id), {})[judgment.order] = judgment.result
    verdicts: dict[str, list[tuple[str, str]]] = {}
    for (judge_model, comparison_id), orders in answers.items():
        if len(orders) == 2:
            verdict = combine(orders["left-first"], orders["right-first"])
            if verdict != "unparsed":
                verdicts.setdefault(judge_model, []).append((comparison_id, verdict))
    return verdicts


def agreement(db) -> dict | None:
    """Tie-discounted agreement between the judge's pairwise answers and the raters, if any."""
    asked = judgments.of_protocol(db, "pairwise")
    if not asked:
        return None
    answers: dict[tuple[str, int], dict[str, str]] = {}
    judge_model = None
    for judgment in asked:
        answers.setdefault((judgment.comparison_id, judgment.position), {})[judgment.order] = judgment.result
        judge_model = judgment.judge_model
    conversation_pairs, turn_pairs, unparsed = [], [], 0
    for row in comparisons.every(db):
        left = [t for t in chatlog.turns(db, row.left_conversation) if t["role"] == "assistant"]
        right = [t for t in chatlog.turns(db, row.right_conversation) if t["role"] == "assistant"]
        for position in range(0, min(len(left), len(right)) + 1):
            orders = answers.get((row.id, position))
            if not orders or len(orders) < 2:
                continue
            verdict = combine(orders["left-first"], orders["right-first"])
            if verdict == "unparsed":
                unparsed += 1
                continue
            if position == 0:
                if row.verdict:
                    conversation_pairs.append((row.verdict, verdict))
                continue
            l, r = left[position - 1]["rating"], right[position - 1]["rating"]
            if l and r:
                human = "tie" if RANK[l] == RANK[r] else ("left" if RANK[l] > RANK[r] else "right")
                turn_pairs.append((human, verdict))
    return {"judge": judge_model, "conversations": len(conversation_pairs), "turns": len(turn_pairs),
            "conversation_agreement": tie_discounted_accuracy(conversation_pairs),
            "turn_agreement": tie_discounted_accuracy(turn_pairs), "unparsed": unparsed}


def run(judge: Judge, pairwise: bool = True, helpfulness: bool = True, db=None) -> dict:
    db = db or connect()
    runner = Runner(db, judge)
    results = []
    if pairwise:
        for row in comparisons.every(db):
            results.append(runner.comparison(row))
    if helpfulness:
        for conversation in chatlog.all_conversations(db):
            runner.helpfulness(conversation["turns"])
    verdicts = [r["conversation"] for r in results]
    return {"asked": runner.asked, "reused": runner.reused, "comparisons": len(results),
            "verdicts": {v: verdicts.count(v) for v in ("left", "right", "tie", "unparsed")},
            "mismatched": sum(r["mismatched"] for r in results), "agreement": agreement(db)}


def main(args) -> int:
    judge = Judge(args.url, args.model, args.api_key or "EMPTY", timeout=args.timeout, retries=args.retries)
    both = not args.pairwise and not args.helpfulness
    try:
        summary = run(judge, pairwise=args.pairwise or both, helpfulness=args.helpfulness or both)
    except JudgeUnavailable as exc:
        print(f"lima judge: {exc}", file=sys.stderr)
        return 2
    print(f"asked the judge {summary['asked']} times, reused {summary['reused']} stored answers")
    print(f"comparisons judged: {summary['comparisons']} ({summary['mismatched']} with different turn counts); "
          f"verdicts {summary['verdicts']}")
    if summary["agreement"]:
        a = summary["agreement"]
        print(f"tie-discounted agreement with raters: conversations {a['conversation_agreement']}, "
              f"turns {a['turn_agreement']}; unparsed {a['unparsed']}")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="the judge model's name at that URL")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--pairwise", action="store_true", help="only the pairwise protocol")
    parser.add_argument("--helpfulness", action="store_true", help="only the 1-6 helpfulness scale")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--retries", type=int, default=4)
