"""An LLM judge over the OpenAI protocol: any base URL (a hosted model, a local vLLM, this service).

Three protocols from the paper:
  - the three-level rating of section 4.3 (Fail / Pass / Excellent, with the paper's definitions),
    each reply judged with the whole conversation before it, as section 6's raters did;
  - helpfulness on a 1-6 scale (its Appendix D), used to pick a checkpoint and to score turns;
  - pairwise preference (section 4.1: which response is better, or neither), asked in both orders
    to cancel position bias (see ``compare``).
Where the endpoint gives log probabilities (this service, vLLM, OpenAI), a question with a fixed
set of answers also gets each answer's probability from the judge's first token (``Answer``): a
label chosen at 51% is not one chosen at 99%, and the report says so. Endpoints without them are
asked the same question and give the label alone.
A reply the judge garbles is returned as unparsed (score None), never guessed. Transient failures
are retried with exponential backoff by the openai client; an unreachable judge raises
``JudgeUnavailable`` naming the URL.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import openai

from lima.paper import DEFINITIONS, LABELS

HELPFULNESS_SYSTEM = (
    "You are a careful evaluator of AI assistant responses. You judge helpfulness: whether the response "
    "does what the user asked, correctly, completely and clearly, at a length that suits the request.")

HELPFULNESS_TEMPLATE = """Rate the assistant's response to the user's request on this 6-point helpfulness scale:

1 - Not helpful: off-topic, nonsensical, or refuses a reasonable request.
2 - Barely helpful: touches the topic but misses what was asked or is mostly wrong.
3 - Somewhat helpful: partly answers, with notable errors or omissions.
4 - Helpful: answers the request correctly with minor gaps.
5 - Very helpful: correct, complete and well organised.
6 - Excellent: as good as an expert's answer, nothing important missing or wrong.

[User request]
{prompt}

[Assistant response]
{response}

Reply with one line "Score: N" (N from 1 to 6), then one sentence explaining why."""

RATING_SYSTEM = ("You rate the replies of an AI assistant in a conversation, as the LIMA paper's human raters did. "
                 "You judge only the last reply, in the light of the conversation before it.")


def rating_prompt(history: list[dict[str, str]], reply: str) -> str:
    """The paper's three-level question for ``reply``, after ``history`` (user and assistant turns)."""
    scale = "\n".join(f"{label}: {definition}." for label, definition in DEFINITIONS.items())
    conversation = "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in history)
    return (f"Rate the assistant's last reply on this scale:\n\n{scale}\n\n[Conversation so far]\n\n"
            f"{conversation}\n\n[Reply to rate]\n{reply}\n\n"
            f"On the first line answer exactly one word: {', '.join(LABELS[:-1])} or {LABELS[-1]}. "
            "Then give one sentence of reason.")


LABEL = re.compile(r"^\W*(" + "|".join(LABELS) + r")\b", re.IGNORECASE)


def parse_label(raw: str) -> str | None:
    """The label on the judge's first non-empty line, or None (unparsed): never guessed."""
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    match = LABEL.match(line)
    return match.group(1).capitalize() if match else None


SCORE = re.compile(r"score\s*[:=]?\s*\**\s*([1-6])\b", re.IGNORECASE)


# How many alternatives to ask for at the answer's first token: every answer's first token is among
# them for any sensible tokenizer, and 20 is OpenAI's limit.
TOP_LOGPROBS = 20


@dataclass
class Answer:
    text: str
    probabilities: dict[str, float] | None = None  # each choice's probability; None where not given


def choice_probabilities(logprobs, choices: list[str]) -> dict[str, float] | None:
    """Each choice's probability from the log probabilities of the reply's first token that says
    something: an alternative that begins exactly one choice (case and spaces aside) counts for it
    (under a guided choice that is exact: that choice is the only way on). Normalised over the
    choices; None when no alternative begins one."""
    content = getattr(logprobs, "content", None) or []
    first = next((t for t in content if t.token.strip()), None)
    if first is None:
        return None
    mass = dict.fromkeys(choices, 0.0)
    for alternative in first.top_logprobs or []:
        text = alternative.token.strip().lower()
        fits = [c for c in choices if text and c.lower().startswith(text)]
        if len(fits) == 1:
            mass[fits[0]] += math.exp(alternative.logprob)
    total = sum(mass.values())
    return {c: m / total for c, m in mass.items()} if total > 0 else None


def weighted_rating(probabilities: dict[str, float]) -> float:
    """The paper's three levels as 1, 2, 3 (Fail, Pass, Excellent), weighted by the judge's probabilities."""
    return sum(p * (LABELS.index(label) + 1) for label, p in probabilities.items())


def uncertainty(probabilities: dict[str, float]) -> str | None:
    """'near tie' when the two likeliest answers are within 10 points, 'unsure' when none reaches 60%."""
    first, second = (sorted(probabilities.values(), reverse=True) + [0.0])[:2]
    return "near tie" if first - second < 0.1 else "unsure" if first < 0.6 else None


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached after retries."""


class QuestionRefused(ValueError):
    """The judge refused this one question (HTTP 400: longer than its context, say); others may pass."""


@dataclass
class Judge:
    base_url: str
    model: str
    api_key: str = "EMPTY"
    timeout: float = 120.0
    retries: int = 4
    max_tokens: int = 200  # a verdict and one sentence of reason
    # Ask for the answer alone, one of the labels (vLLM's and LIMA Studio's `guided_choice`): a small
    # judge that cannot follow the instruction still picks the label it ranks highest. Off for
    # endpoints that do not know the extension.
    guided: bool = False
    # Ask for log probabilities where there are fixed answers; turned off for an endpoint that refuses them.
    logprobs: bool = True

    @classmethod
    def from_env(cls) -> "Judge | None":
        """``LIMA_JUDGE_URL`` and ``LIMA_JUDGE_MODEL`` (plus ``LIMA_JUDGE_API_KEY``), when set."""
        url, model = os.environ.get("LIMA_JUDGE_URL"), os.environ.get("LIMA_JUDGE_MODEL")
        if not url or not model:
            return None
        return cls(url, model, os.environ.get("LIMA_JUDGE_API_KEY", "EMPTY"))

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout,
                             max_retries=self.retries)

    def ask(self, system: str, user: str, client: openai.OpenAI | None = None,
            choices: list[str] | None = None) -> str:
        """One judge call, deterministic (temperature 0); the reply text. With ``guided`` and
        ``choices``, the reply is one of ``choices`` (no repetition penalty: the labels are in the question)."""
        return self.answer(system, user, client, choices).text

    def answer(self, system: str, user: str, client: openai.OpenAI | None = None,
               choices: list[str] | None = None) -> Answer:
        """``ask``, with each choice's probability where ``choices`` are given and the endpoint has them."""
        extra = {"guided_choice": choices, "repetition_penalty": 1.0} if self.guided and choices else None
        wanted = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if choices and self.logprobs else {}
        try:
            try:
                reply = (client or self.client()).chat.completions.create(
                    model=self.model, temperature=0, max_tokens=self.max_tokens, extra_body=extra, **wanted,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
            except openai.BadRequestError as exc:
                if not wanted or "logprob" not in str(exc.message).lower():
                    raise
                self.logprobs = False  # an endpoint without log probabilities: ask as before
                return self.answer(system, user, client, choices)
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise JudgeUnavailable(f"the judge at {self.base_url} is unreachable after {self.retries} retries "
                                   f"({type(exc).__name__}); check the URL and that the server is running") from exc
        except openai.BadRequestError as exc:
            raise QuestionRefused(f"the judge refused the question: {exc.message}") from exc
        except openai.APIStatusError as exc:
            raise JudgeUnavailable(f"the judge at {self.base_url} answered HTTP {exc.status_code}: "
                                   f"{exc.message}") from exc
        choice = reply.choices[0]
        probabilities = choice_probabilities(choice.logprobs, choices) if wanted else None
        return Answer(choice.message.content or "", probabilities)

    def helpfulness(self, prompt: str, response: str, client: openai.OpenAI | None = None) -> tuple[int | None, str]:
        """(score 1-6 or None when the reply has no score, raw reply)."""
        raw = self.ask(HELPFULNESS_SYSTEM, HELPFULNESS_TEMPLATE.format(prompt=prompt, response=response), client)
        return parse_score(raw), raw


def parse_score(raw: str) -> int | None:
    match = SCORE.search(raw)
    if match:
        return int(match.group(1))
    bare = raw.strip()
    return int(bare) if re.fullmatch(r"[1-6]", bare) else None
