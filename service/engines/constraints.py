"""Constrained decoding for the transformers engine: guided choice and JSON replies, by llguidance.

A request may constrain its reply to one of a few strings (vLLM's ``guided_choice``, what a judge
asks for) or to JSON (OpenAI's ``response_format``: ``json_object`` or a ``json_schema``). Both are
grammars for llguidance (the library vLLM offers as its ``guidance`` backend): a ``Matcher`` per
request says, before each token, which tokens may come next (the stop tokens once the grammar is
complete); the sampler masks the rest. JSON is compact (no free whitespace): a small model given
free whitespace can spend its whole budget on newlines. What llguidance cannot enforce in a schema
(look-around in a pattern, an unknown format, a broken ``$ref``) is refused when the request comes
in, naming the field, rather than silently not enforced.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from service.engines.base import InvalidRequest
from service.sampling import SamplingParams

SCHEMA_PARAM = "response_format.json_schema.schema"


class Grammars:
    """One model's tokenizer as llguidance sees it (each token's bytes), built on first use (under a second)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int]):
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, sorted(stop_ids)
        self._ll = None
        self._lock = threading.Lock()

    def ll_tokenizer(self):
        with self._lock:
            if self._ll is None:
                import llguidance.hf

                self._ll = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size,
                                                        eos_token=self.stop_ids)
            return self._ll

    def token_bytes(self, token: int) -> bytes:
        """The token's exact bytes (part of a character, for some): what log probabilities report."""
        if token < len(self.tokenizer):
            return self.ll_tokenizer().decode_bytes([token])
        return b""  # a padding row of the output layer: no text

    def matcher(self, params: SamplingParams) -> "Matcher | None":
        """The request's constraint, checked and ready (its first mask computed, so the first use of a
        grammar does not stall the batch); None when it has none. Raises InvalidRequest for a grammar
        llguidance cannot enforce. Call off the compute thread: it can take a second the first time."""
        import llguidance

        if params.choices:
            grammar = llguidance.LLMatcher.grammar_from_lark(
                "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in params.choices))
            param = "guided_choice"
        elif params.json_schema is not None:
            try:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    json.loads(params.json_schema), defaults={"whitespace_flexible": False})
            except Exception as exc:  # not a schema at all
                raise InvalidRequest(f"{SCHEMA_PARAM}: {exc}", SCHEMA_PARAM) from exc
            param = SCHEMA_PARAM
        else:
            return None
        tokenizer = self.ll_tokenizer()
        problem = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if problem:
            raise InvalidRequest(f"{param}: cannot be enforced: {problem.strip().splitlines()[-1]}", param)
        matcher = Matcher(llguidance.LLMatcher(tokenizer, grammar), self.vocab_size)
        matcher.allowed()
        return matcher


class Matcher:
    """One request's grammar state: which tokens may come next, and the tokens it has taken."""

    def __init__(self, ll_matcher, vocab_size: int):
        self.ll, self.vocab_size = ll_matcher, vocab_size

    def allowed(self) -> np.ndarray:
        """A boolean mask over the vocabulary: True for every token the grammar allows next."""
        bits = np.frombuffer(self.ll.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.vocab_size].astype(bool)

    def take(self, token: int) -> None:
        if not self.ll.is_stopped() and not self.ll.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self.ll.get_error()}")
