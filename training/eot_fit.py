"""Fit the new EOT token's output row to the run's own data before training (``lima.eot_init: fitted``).

A new token must go from "never" to "here" in a few optimizer steps, and Adam moves a row by
about the learning rate per step: far too little for a short run. A copy of the base's own end of
turn (``chat_setup``) starts the row where the base stops in its own format, but in the LIMA
format it is still weak where the run's answers end (P(EOT) 0.13 on cpu-demo's data, measured).

With every other weight frozen, the EOT logit at each position is ``h . e`` (``h`` the final hidden
state, ``e`` the row), and the loss the run would put on it is a logistic regression: at the
positions where an answer ends the target is EOT, at every other assistant position it is some
other token, whose competition is the log-sum-exp of the other logits there. That problem is convex:
one forward pass over (part of) the training set, then L-BFGS on ``e`` alone, with an L2 pull
towards the copy it started from so it stays an ordinary-sized row. Fine-tuning then starts from a
model that already ends its answers where the data does, and ``Refit`` fits the row again at
every epoch's end, so it follows the hidden states as fine-tuning moves them.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

log = logging.getLogger("lima.train")

L2 = 1e-4  # pull towards the starting row; 0 overfits (the row's norm grows 25-fold), 1e-2 barely moves it


@torch.no_grad()
def _positions(model, tokenizer, conversations: list[list[dict]], eot_id: int, max_length: int, budget: int,
               bf16: bool):
    """Final hidden states, the other tokens' log-sum-exp and the EOT target (1/0) at every
    position whose next token is an assistant token, over conversations up to ``budget`` tokens."""
    hidden, others, targets, used = [], [], [], 0
    head = model.get_output_embeddings()
    for messages in conversations:
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
        ids, mask = encoded["input_ids"][:max_length], encoded["assistant_masks"][:max_length]
        if used and used + len(ids) > budget:
            continue
        used += len(ids)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):  # the forward pass only
            states = model.get_decoder()(torch.tensor([ids], device=model.device)).last_hidden_state[0, :-1]
        keep = torch.tensor(mask[1:], device=model.device).bool()
        states = states[keep].float()
        logits = head(states.to(head.weight.dtype)).float()
        logits[:, eot_id] = -float("inf")
        hidden.append(states)
        others.append(torch.logsumexp(logits, -1))
        targets.append((torch.tensor(ids[1:], device=model.device)[keep] == eot_id).float())
    if not hidden:
        return None
    return torch.cat(hidden), torch.cat(others), torch.cat(targets), used


def fit(model, tokenizer, eot_id: int, conversations: list[list[dict]], max_length: int, budget: int,
        bf16: bool = False) -> dict | None:
    """Fit the EOT output row (the shared row of a tied model); returns what it did, or None when
    the data has no answer end to fit on. ``bf16``: the forward pass under bf16 autocast (the fit
    itself is float32: L-BFGS's line search needs the precision)."""
    was_training = model.training
    model.eval()
    found = _positions(model, tokenizer, conversations, eot_id, max_length, budget, bf16)
    model.train(was_training)
    if found is None or not found[2].any():
        log.warning("no answer end within %d tokens to fit the EOT row on: it keeps its start", budget)
        return None
    hidden, others, targets, used = found
    row = model.get_output_embeddings().weight
    start = row[eot_id].detach().float().clone()

    def probabilities(e):
        return torch.sigmoid(hidden @ e - others)

    before = probabilities(start)[targets == 1].mean().item()
    e = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([e], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(hidden @ e - others, targets) \
            + L2 * ((e - start) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        row[eot_id] = e.detach().to(row.dtype)
    after = probabilities(e.detach())
    report = {"tokens": used, "answer_ends": int(targets.sum()), "p_eot_before": round(before, 4),
              "p_eot_after": round(after[targets == 1].mean().item(), 4),
              "false_ends": round((after[targets == 0] > 0.5).float().mean().item(), 6)}
    log.info("EOT row fitted on %(answer_ends)d answer ends in %(tokens)d tokens: P(EOT) there "
             "%(p_eot_before).3f -> %(p_eot_after).3f; other positions above 0.5: %(false_ends).4f", report)
    return report


class Refit(TrainerCallback):
    """A Trainer callback that fits the row again at the end of every epoch, before the epoch's
    checkpoint is saved. Fine-tuning moves the hidden states where answers end far more than its
    Adam steps move one row: on cpu-demo, P(EOT) where the trained answers end fell from 0.89 after
    the first fit to 0.32 over two epochs, and the model ran on (ended 52% of its replies against
    the base's 80%); refitted, 0.91 and 88%. ``reports`` keeps what each fit did."""

    def __init__(self, tokenizer, eot_id: int, conversations: list[list[dict]], max_length: int, budget: int,
                 bf16: bool, on_fit=lambda reports: None, cancelled=lambda: False):
        self.tokenizer, self.eot_id, self.conversations = tokenizer, eot_id, conversations
        self.max_length, self.budget, self.bf16, self.on_fit = max_length, budget, bf16, on_fit
        self.cancelled = cancelled  # a cancelled run's weights are thrown away: no fit at its end
        self.reports: list[dict] = []
        self.fitted_at = 0  # the step of the latest fit

    def _refit(self, state, model) -> None:
        report = fit(model, self.tokenizer, self.eot_id, self.conversations, self.max_length, self.budget, self.bf16)
        self.fitted_at = state.global_step
        if report is not None:
            self.reports.append({"epoch": round(state.epoch or 0, 2), "step": state.global_step, **report})
            self.on_fit(self.reports)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not self.cancelled():
            self._refit(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # a run stopped inside an epoch (--max-steps) publishes weights no epoch end refitted
        if state.global_step != self.fitted_at and not self.cancelled():
            self._refit(state, model)
