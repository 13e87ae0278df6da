"""Continuous batching for transformers models, all on one compute thread.

Why not ``model.generate``: it takes one batch and one sampling setting at a time, so concurrent
requests would either queue behind a lock or wait for a whole batch to finish. Here every request
joins the running batch at the next step (its prompt prefilled alone, its KV merged in), leaves
when it finishes, and keeps its own temperature, top-p, repetition penalty and stop strings.
transformers' own continuous-batching manager drops the repetition penalty the paper asks for,
which is why this loop exists.

Why one thread for everything (loads, batch state, every model's steps): each thread that runs a
parallel torch operation gets its own OpenMP team, and once OpenMP manages more threads than
there are cores, libgomp stops letting its idle workers spin, so every parallel region pays a
wake-up: two teams on 2 cores halve decode speed (measured: 47 -> 24 tokens/s, and 30 -> 16.5
ms per step; one vocabulary-sized ``torch.ones`` on another thread is enough to start a team).
So ``ComputeThread`` runs all torch work of an engine, and a ``Batcher`` is only the state of one
model's batch.

One iteration of the compute loop:
  1. run queued calls (model loads, unloads)
  2. for each model: admit waiting requests (prefill, sample the first token, merge the KV)
  3. for each model with rows: one decode step (forward the last tokens, sample, detokenize, emit),
     then retire finished or cancelled rows and drop KV columns only padding still uses
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from service.engines import kv_cache
from service.engines.base import Delta, Logprob
from service.engines.sampler import BatchSampler, TokenLogprob
from service.sampling import SamplingParams

log = logging.getLogger("lima.batcher")


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    emit: Callable[[Delta], None]
    output_ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded output so far
    sent: int = 0  # characters of ``text`` already emitted
    prefix_offset: int = 0
    read_offset: int = 0
    cancelled: bool = False
    finish_reason: str | None = None
    matcher: object = None  # the reply's grammar (constraints.Matcher), if it has one
    logprobs: list[Logprob] = field(default_factory=list)  # not yet emitted (when asked for)


class ForwardRunner:
    """Prefill and decode through the model's own ``forward`` (any architecture, any device)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.device = next(model.parameters()).device  # where it serves (a GPU sleep moves it and back)

    def prefill(self, ids: torch.Tensor, cache) -> torch.Tensor:
        return self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """(S, V) logits at every position of ``ids`` (for perplexity)."""
        return self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]

    def decode(self, last: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        return self.model(input_ids=last, attention_mask=mask, position_ids=positions.unsqueeze(1),
                          past_key_values=cache, use_cache=True).logits[:, -1]


class Batcher:
    """The running batch of one model. Every method but ``submit`` runs on the compute thread.

    ``runner`` does the arithmetic: a ``ForwardRunner`` or the CPU's lean decoder (fast_llama)."""

    def __init__(self, compute: "ComputeThread", runner, tokenizer, eos_ids: set[int], max_batch: int = 8,
                 name: str = "model", token_bytes: Callable[[int], bytes] | None = None):
        self.compute, self.runner, self.tokenizer, self.eos_ids = compute, runner, tokenizer, eos_ids
        # a token's exact bytes, for log probabilities (decoding one token alone may split a character)
        self.token_bytes = token_bytes or (lambda token: tokenizer.decode([token]).encode())
        self.max_batch, self.name = max_batch, name
        self.device = runner.device
        self.num_layers = runner.config.get_text_config().num_hidden_layers
        self.vocab_size = runner.config.get_text_config().vocab_size  # logits width, padding rows included
        self.waiting: queue.Queue[Sequence] = queue.Queue()
        self.retiring: str | None = None  # None, "drain" (finish what was submitted) or "now"
        self._reset()

    # -- any thread -----------------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        if self.retiring:
            raise RuntimeError(f"model '{self.name}' has been unloaded")
        self.waiting.put(seq)
        self.compute.wake.set()

    def stop(self, drain: bool = False, timeout: float | None = 60) -> None:
        """Retire this model; with ``drain`` the requests already submitted finish first."""
        self.retiring = "drain" if drain else "now"
        self.compute.drained(self).result(timeout)

    @property
    def active_rows(self) -> int:
        return len(self.active)

    # -- compute thread -------------------------------------------------------------------------

    def _reset(self) -> None:
        self.active: list[Sequence] = []
        self.cache = kv_cache.new_cache(self.num_layers)
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self.last = torch.zeros(0, 1, dtype=torch.long, device=self.device)
        self.sampler = BatchSampler(self.vocab_size, self.device, exempt=self.eos_ids)

    def tick(self) -> bool:
        """Admit and step once; False when there was nothing to do."""
        worked = False
        while len(self.active) < self.max_batch:
            try:
                seq = self.waiting.get_nowait()
            except queue.Empty:
                break
            self._admit(seq)
            worked = True
        if self.active:
            self._step()
            worked = True
        return worked

    @property
    def idle(self) -> bool:
        return not self.active and self.waiting.empty()

    @torch.inference_mode()
    def _admit(self, seq: Sequence) -> None:
        if seq.cancelled:
            return
        ids = torch.tensor([seq.prompt_ids], device=self.device)
        single = kv_cache.new_cache(self.num_layers)
        logits = self.runner.prefill(ids, single)
        row = len(self.active)
        self.sampler.add_row(seq.params, seq.prompt_ids, seq.matcher)
        token = self.sampler.sample(logits, rows=[row])
        if self._push(seq, int(token[0]), self.sampler.last_logprobs[0]):
            self.sampler.keep_rows(torch.arange(row))
            return
        self.mask = kv_cache.merge(self.cache, self.mask, single, len(seq.prompt_ids))
        self.positions = torch.cat([self.positions, torch.tensor([len(seq.prompt_ids)], device=self.device)])
        self.last = torch.cat([self.last, token.view(1, 1)])
        self.active.append(seq)

    @torch.inference_mode()
    def _step(self) -> None:
        ones = torch.ones(len(self.active), 1, dtype=self.mask.dtype, device=self.device)
        mask = torch.cat([self.mask, ones], dim=1)
        logits = self.runner.decode(self.last, mask, self.positions, self.cache)
        self.mask, self.positions = mask, self.positions + 1
        tokens = self.sampler.sample(logits)
        self.last = tokens.view(-1, 1)
        done = [self._push(seq, int(t), lp)
                for seq, t, lp in zip(self.active, tokens.tolist(), self.sampler.last_logprobs)]
        if any(done):
            keep = torch.tensor([i for i, d in enumerate(done) if not d], dtype=torch.long)
            self.active = [s for s, d in zip(self.active, done) if not d]
            if not self.active:
                self._reset()
                return
            self.mask = kv_cache.select(self.cache, self.mask, keep.to(self.device))
            self.positions, self.last = self.positions[keep], self.last[keep]
            self.sampler.keep_rows(keep)

    def _push(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> bool:
        """Record one sampled token, emit any new text; True when the sequence is finished.
        A token's log probability goes out with the text it completes (the stop token's with none)."""
        if seq.cancelled:
            return True
        finish = None
        if token in self.eos_ids and not seq.params.ignore_eos:
            finish = "stop"
        else:
            if logprob is not None:
                seq.logprobs.append(self._as_text(logprob))
            seq.output_ids.append(token)
            self._detokenize(seq)
            if seq.params.stop and self._hit_stop(seq):
                finish = "stop"
            elif len(seq.output_ids) >= seq.max_new_tokens:
                finish = "length"
        # Hold back text that could be the start of a stop string until it is resolved.
        hold = 0 if finish else max((len(s) - 1 for s in seq.params.stop), default=0)
        ready = len(seq.text) - hold
        if ready > seq.sent or finish:
            piece, seq.sent = seq.text[seq.sent:max(ready, seq.sent)], max(ready, seq.sent)
            completion = len(seq.output_ids) + (1 if finish == "stop" and token in self.eos_ids else 0)
            seq.emit(Delta(text=piece, finish_reason=finish, prompt_tokens=len(seq.prompt_ids),
                           completion_tokens=completion, logprobs=seq.logprobs or None))
            seq.logprobs = []
        seq.finish_reason = finish
        return finish is not None

    def _as_text(self, logprob: TokenLogprob) -> Logprob:
        raw = self.token_bytes
        return Logprob.of(raw(logprob.token), logprob.logprob, [Logprob.of(raw(t), lp) for t, lp in logprob.top])

    def _detokenize(self, seq: Sequence) -> None:
        # Incremental decoding (as in TGI/vLLM): decode a short window so multi-byte characters
        # and merged pieces come out whole, and only once.
        ids = seq.output_ids
        prefix = self.tokenizer.decode(ids[seq.prefix_offset:seq.read_offset], skip_special_tokens=True)
        full = self.tokenizer.decode(ids[seq.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            seq.text += full[len(prefix):]
            seq.prefix_offset, seq.read_offset = seq.read_offset, len(ids)

    @staticmethod
    def _hit_stop(seq: Sequence) -> bool:
        window = max(len(s) for s in seq.params.stop) + 16
        start = max(0, len(seq.text) - window)
        hits = [i for s in seq.params.stop if (i := seq.text.find(s, start)) >= 0]
        if hits:
            seq.text = seq.text[: min(hits)]
            seq.sent = min(seq.sent, len(seq.text))
            return True
        return False

    def _fail_all(self, reason: str) -> None:
        pending = list(self.active)
        while True:
            try:
                seq = self.waiting.get_nowait()
            except queue.Empty:
                break
            pending.append(seq)
        for seq in pending:
            seq.emit(Delta(finish_reason="error", text=reason, prompt_tokens=len(seq.prompt_ids),
                           completion_tokens=len(seq.output_ids)))
        self._reset()


class ComputeThread:
    """Runs every torch operation of an engine: queued calls and the batchers' steps."""

    def __init__(self, name: str = "compute"):
        self.wake = threading.Event()
        self.batchers: list[Batcher] = []
        self._calls: queue.Queue[tuple[Callable, Future]] = queue.Queue()
        self._drains: list[tuple[Batcher, Future]] = []
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def call(self, fn: Callable, *args, **kwargs) -> Future:
        """Run ``fn`` on the compute thread between steps; returns a Future of its result."""
        future: Future = Future()
        self._calls.put((lambda: fn(*args, **kwargs), future))
        self.wake.set()
        return future

    def serve(self, runner, tokenizer, eos_ids: set[int], max_batch: int = 8, name: str = "model",
              token_bytes: Callable[[int], bytes] | None = None) -> Batcher:
        """A batcher for ``runner``, stepped by this thread from now on (call from any thread)."""

        def create() -> Batcher:  # here, not on the caller's thread: building its state runs torch
            batcher = Batcher(self, runner, tokenizer, eos_ids, max_batch, name, token_bytes)
            self.batchers.append(batcher)
            return batcher

        return self.call(create).result()

    def drained(self, batcher: Batcher) -> Future:
        future: Future = Future()
        self.call(self._drains.append, (batcher, future))
        return future

    def close(self, timeout: float = 5) -> None:
        """Retire every batcher and let the thread end (a step takes milliseconds); a load still
        compiling is not waited for past ``timeout``: the thread is a daemon and dies with the process."""
        for batcher in list(self.batchers):
            batcher.retiring = "now"
        self._closed = True
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            self.wake.clear()
            while True:
                try:
                    fn, future = self._calls.get_nowait()
                except queue.Empty:
                    break
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # the caller gets the error, the loop goes on
                        future.set_exception(exc)
            busy = False
            for batcher in list(self.batchers):
                try:
                    busy |= batcher.tick()
                except Exception as exc:  # one bad step must not kill the model for everyone
                    log.exception("generation step failed for %s", batcher.name)
                    batcher._fail_all(f"generation failed: {exc}")
                if batcher.retiring == "now" or (batcher.retiring == "drain" and batcher.idle):
                    batcher._fail_all(f"model '{batcher.name}' was unloaded")
                    self.batchers.remove(batcher)
            for batcher, future in [d for d in self._drains if d[0] not in self.batchers]:
                self._drains.remove((batcher, future))
                future.set_result(None)
            if self._closed:
                return
            if not busy and self._calls.empty():
                self.wake.wait()
