"""Preference data from the ratings themselves: a KTO set and a DPO set built from the chat log.

KTO (unpaired): one row per assistant reply a person rated, the conversation before it as the
prompt (the context the model answered in: an earlier reply reads as its rewrite only where the
rewrite was made before this reply was asked for, as the chat then sent it), the reply as the
completion:

    Excellent -> desirable      Pass -> desirable, weighted      Fail -> undesirable

and one desirable row per rewrite (what the reply should have been, for the same prompt). TRL's
KTO has one weight per class, so Pass's weight relative to Excellent (the recipe's
``lima.preference.pass_weight``, 0 to 1) is made by repetition, to the nearest fraction with a
denominator of at most 4: with 0.5 every Excellent row and rewrite appears twice, Pass once; with
0.75 four times and three times (a Fail row as often as an Excellent one); 0 leaves Pass out. (Balancing desirable against undesirable rows
is the trainer's ``desirable_weight`` / ``undesirable_weight``: ``training/preference.py``.)

DPO (paired): one row per rewritten reply, the rewrite chosen and the original rejected.

Rows are TRL's conversational format (``prompt`` a list of messages, ``completion`` / ``chosen`` /
``rejected`` one assistant message), so the trainers render them with the model's own chat
template: the same template and end-of-turn token as SFT and the service. Judges' ratings never
count. The set is read from one moment of the log; its sha256 names it, so a set previewed in
the workbench and then changed by a new rating is noticed before training starts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction

from lima.store import chatlog
from lima.store.db import as_logged, snapshot

STAGES = ("kto", "dpo")
DESIRABLE = {"Excellent": True, "Pass": True, "Fail": False}


class PreferenceError(ValueError):
    """No usable set can be built; the message says why and what to do."""


@dataclass
class Filters:
    models: list[str] | None = None
    raters: list[str] | None = None
    openers_only: bool = False
    since: str | None = None

    def describe(self) -> str:
        parts = [f"models {', '.join(self.models)}" if self.models else "",
                 f"raters {', '.join(self.raters)}" if self.raters else "",
                 "evaluation openers only" if self.openers_only else "", f"since {self.since}" if self.since else ""]
        return "; ".join(p for p in parts if p) or "all rated conversations"

    def keeps(self, who: str | None, when: str | None) -> bool:
        """Whether a rating or rewrite by ``who`` made at ``when`` passes the rater and date filters
        (a reply rated by one person and rewritten by another is kept for the one the filter names)."""
        return (not self.raters or who in self.raters) and (not self.since or (when or "") >= self.since)


@dataclass
class PreferenceSet:
    stage: str
    rows: list[dict]
    rating_ids: list[int] = field(default_factory=list)
    rewrite_ids: list[int] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # by label, model, rater
    skipped: list[str] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)  # those with a reply rated Fail

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in self.rows).encode()).hexdigest()

    def record(self) -> dict:
        """What a run record keeps: which ratings and rewrites went in, and the counts."""
        return {"ratings": self.rating_ids, "rewrites": self.rewrite_ids, "fail_conversations": self.conversations}

    def summary(self) -> str:
        """The counts in one Markdown paragraph, as shown before training starts."""
        def line(name):
            return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.get(name, {}).items()))
        n = len(self.rows)
        what = (f"row{'s' * (n != 1)} (prompt, reply, desirable or not)" if self.stage == "kto" else
                f"pair{'s' * (n != 1)} (rewrite over original)")
        text = (f"**{n}** {self.stage.upper()} {what} · by label: {line('label')} · "
                f"by model: {line('model')} · by rater: {line('rater')}")
        if self.skipped:
            text += f" · left out: {'; '.join(self.skipped)}"
        return text

    def sample(self) -> str:
        """One row as a person reads it (Markdown)."""
        row = self.rows[0]
        context = " / ".join(f"{m['role']}: {_short(m['content'])}" for m in row["prompt"])
        if self.stage == "kto":
            verdict = "desirable" if row["label"] else "undesirable"
            return f"Sample row: {context} → **{verdict}**: {_short(row['completion'][0]['content'])}"
        return (f"Sample pair: {context} → **chosen**: {_short(row['chosen'][0]['content'])} · "
                f"**rejected**: {_short(row['rejected'][0]['content'])}")


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def copies(pass_weight: float) -> tuple[int, int]:
    """(copies of a Pass row, copies of an Excellent row or rewrite) for ``pass_weight``."""
    if not 0 <= pass_weight <= 1:
        raise PreferenceError(f"lima.preference.pass_weight must be between 0 and 1, got {pass_weight}")
    if pass_weight == 0:
        return 0, 1
    weight = Fraction(pass_weight).limit_denominator(4)
    if weight == 0:
        raise PreferenceError(f"lima.preference.pass_weight {pass_weight} is below 1/4, the smallest weight "
                              "repetition can make; set 0 to leave Pass out")
    return weight.numerator, weight.denominator


def utc_since(since: str | None) -> str | None:
    """``since`` (an ISO date, or date and time; UTC unless it says otherwise) in the log's own
    format, so it compares with the log's timestamps as text."""
    if not since:
        return None
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise PreferenceError(f"since must be an ISO date such as 2026-11-01 (or a date and time), "
                              f"got {since!r}") from None
    return as_logged(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def choices(db) -> tuple[list[str], list[str]]:
    """The models and the raters that rated or rewritten replies come from: what filters can pick."""
    replies = chatlog.rated_replies(db)
    models = sorted({r["model"] for r in replies if r["model"]})
    raters = sorted({who for r in replies for who in (r["rater"], r["rewriter"]) if who})
    return models, raters


def _context(turns: list[dict], rewrites: list[dict], reply: dict) -> list[dict]:
    """The messages before ``reply`` as the model was sent them: the chat sends a rewritten reply's
    rewrite from then on, so a rewrite made before ``reply`` was asked for replaces its turn."""
    seen = {w["turn_id"]: w["content"] for w in rewrites if w["created"] < reply["created"]}
    return [{"role": t["role"], "content": seen.get(t["id"], t["content"])}
            for t in turns if t["position"] < reply["position"]]


@dataclass
class _Item:
    """One rating or rewrite and the rows it makes."""

    when: str
    rows: list[dict]
    label: str  # Excellent, Pass, Fail or rewrite
    model: str | None  # counted by model: rated replies (KTO) and rewritten ones (DPO)
    rater: str | None
    rating_id: int | None = None
    rewrite_id: int | None = None
    failed: str | None = None  # the conversation, for a reply rated Fail


def build(db, stage: str, filters: Filters | None = None, pass_weight: float = 1.0, min_rows: int = 1,
          max_rows: int | None = None) -> PreferenceSet:
    """The ``stage`` set from the log as it is now; PreferenceError when it cannot train anything.
    ``max_rows`` keeps the newest ratings and rewrites up to that many rows (a CPU preset's cap)."""
    if stage not in STAGES:
        raise PreferenceError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    pass_copies, strong_copies = copies(pass_weight)
    filters = filters or Filters()
    filters = Filters(filters.models, filters.raters, filters.openers_only, utc_since(filters.since))
    with snapshot(db):
        replies = chatlog.rated_replies(db, filters.models, filters.openers_only)
        ids = list(dict.fromkeys(r["conversation_id"] for r in replies))
        history = {cid: chatlog.turns(db, cid) for cid in ids}
        rewrites = {cid: chatlog.conversation_rewrites(db, cid) for cid in ids}
        bad_rewrites = chatlog.rewrites_of_user_turns(db)
    out = PreferenceSet(stage, [])
    out.skipped += [f"rewrite {w['id']} is of a user turn (turn {w['turn_id']}); only replies can be rewritten"
                    for w in bad_rewrites]
    items: list[_Item] = []
    for reply in replies:
        prompt = _context(history[reply["conversation_id"]], rewrites[reply["conversation_id"]], reply)
        if not prompt or prompt[-1]["role"] != "user":
            out.skipped.append(f"turn {reply['turn_id']} does not answer a user turn")
            continue
        label = reply["label"] if filters.keeps(reply["rater"], reply["rated"]) else None
        kept_rewrite = reply["rewrite_id"] and filters.keeps(reply["rewriter"], reply["rewritten"])
        answered = [{"role": "assistant", "content": reply["content"]}]
        rewrite = [{"role": "assistant", "content": reply["rewrite"]}] if kept_rewrite else None
        if stage == "dpo":
            if rewrite is None:
                continue
            if not reply["content"].strip():
                out.skipped.append(f"turn {reply['turn_id']}: the original reply is empty, nothing to reject")
                continue
            items.append(_Item(reply["rewritten"], [{"prompt": prompt, "chosen": rewrite, "rejected": answered}],
                               "rewrite", reply["model"], reply["rewriter"], rewrite_id=reply["rewrite_id"]))
            continue
        if label and not (label == "Pass" and pass_copies == 0):
            if reply["content"].strip():
                n = pass_copies if label == "Pass" else strong_copies
                items.append(_Item(reply["rated"], [{"prompt": prompt, "completion": answered,
                                                     "label": DESIRABLE[label]}] * n,
                                   label, reply["model"], reply["rater"], rating_id=reply["rating_id"],
                                   failed=reply["conversation_id"] if label == "Fail" else None))
            else:
                out.skipped.append(f"turn {reply['turn_id']}: an empty reply")
        if rewrite is not None:
            items.append(_Item(reply["rewritten"], [{"prompt": prompt, "completion": rewrite, "label": True}]
                               * strong_copies, "rewrite", None, reply["rewriter"], rewrite_id=reply["rewrite_id"]))
    items = _newest(items, max_rows, out)
    labels, models, raters = Counter(), Counter(), Counter()
    for item in items:
        out.rows += item.rows
        labels[item.label] += 1
        raters[item.rater or "anonymous"] += 1
        if item.model is not None or item.label != "rewrite":
            models[item.model or "unknown"] += 1
        if item.rating_id is not None:
            out.rating_ids.append(item.rating_id)
        if item.rewrite_id is not None:
            out.rewrite_ids.append(item.rewrite_id)
        if item.failed and item.failed not in out.conversations:
            out.conversations.append(item.failed)
    out.counts = {"label": dict(labels), "model": dict(models), "rater": dict(raters)}
    _check(out, filters, min_rows)
    return out


def _newest(items: list[_Item], max_rows: int | None, out: PreferenceSet) -> list[_Item]:
    """The newest ratings and rewrites that fit in ``max_rows`` rows, in log order; the rest said."""
    if max_rows is None or sum(len(i.rows) for i in items) <= max_rows:
        return items
    kept, total = set(), 0
    for index in sorted(range(len(items)), key=lambda i: (items[i].when or "", i), reverse=True):
        if total + len(items[index].rows) > max_rows:
            break
        kept.add(index)
        total += len(items[index].rows)
    left = len(items) - len(kept)
    out.skipped.append(f"{left} older {'rating or rewrite' if left == 1 else 'ratings and rewrites'}: the recipe "
                       f"keeps the newest {max_rows} rows (lima.preference.max_rows)")
    return [item for index, item in enumerate(items) if index in kept]


def _check(data: PreferenceSet, filters: Filters, min_rows: int) -> None:
    where = filters.describe()
    if not data.rows:
        if data.stage == "dpo":
            raise PreferenceError(f"no rewritten reply ({where}): DPO learns from rewrites; rewrite a reply in the "
                                  "Chat tab (the pencil under it), or choose KTO to learn from the ratings")
        raise PreferenceError(f"no rated reply ({where}): rate replies Fail, Pass or Excellent in the Chat tab first")
    if data.stage == "kto":
        desirable = sum(r["label"] for r in data.rows)
        n = _rows(len(data.rows))
        if desirable == 0:
            raise PreferenceError(f"only Fail: {n}, every one a reply rated Fail and none rewritten ({where}): "
                                  "KTO needs something to move towards as well; rate a good reply Pass or "
                                  "Excellent, or rewrite a failed one")
        if desirable == len(data.rows):
            raise PreferenceError(f"no Fail: {n}, every one Pass, Excellent or a rewrite ({where}): KTO needs at "
                                  "least one reply rated Fail to move away from")
    if len(data.rows) < min_rows:
        raise PreferenceError(f"only {_rows(len(data.rows))} ({where}); the recipe asks for at "
                              f"least {min_rows} (lima.preference.min_rows): rate more replies first")
