"""An LLM judge over the OpenAI protocol: any base URL (a hosted model, a local vLLM, this service).

Two protocols from the paper:
  - helpfulness on a 1-6 scale (its Appendix D), used to pick a checkpoint and to score turns;
  - pairwise preference (section 4.1: which response is better, or neither), asked in both orders
    to cancel position bias (see ``compare``).
A reply the judge garbles is returned as unparsed (score None), never guessed. Transient failures
are retried with exponential backoff by the openai client; an unreachable judge raises
``JudgeUnavailable`` naming the URL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import openai

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

SCORE = re.compile(r"score\s*[:=]?\s*\**\s*([1-6])\b", re.IGNORECASE)


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached after retries."""


@dataclass
class Judge:
    base_url: str
    model: str
    api_key: str = "EMPTY"
    timeout: float = 120.0
    retries: int = 4

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

    def ask(self, system: str, user: str, client: openai.OpenAI | None = None) -> str:
        """One judge call, deterministic (temperature 0); the reply text."""
        try:
            reply = (client or self.client()).chat.completions.create(
                model=self.model, temperature=0, max_tokens=200,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise JudgeUnavailable(f"the judge at {self.base_url} is unreachable after {self.retries} retries "
                                   f"({type(exc).__name__}); check the URL and that the server is running") from exc
        except openai.APIStatusError as exc:
            raise JudgeUnavailable(f"the judge at {self.base_url} answered HTTP {exc.status_code}: "
                                   f"{exc.message}") from exc
        return reply.choices[0].message.content or ""

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
