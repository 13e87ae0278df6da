"""Prepare a base model and tokenizer for the LIMA format: the EOT token and the shared template.

The EOT token is added as a new special token (the pretrained EOS keeps its old meaning) and the
embeddings grow to hold it. Its rows (input embedding and, where the head is not tied, output
row) start as copies of the base's own end of turn: the token its chat template ends a reply
with (``<|im_end|>`` for SmolLM2-Instruct and Qwen-Instruct), or EOS for a pretrained base
without a template. It stays a distinct token, as the paper wants; it only starts where the base
already knows to stop. A row at the mean of the others (transformers' ``mean_resizing``), or an
untrained spare row of a padded vocabulary (Qwen), starts at "never": the mean direction raises
every logit alike, so the token scores far below the rest, and Adam moves a row by about the
learning rate per step, so a short run never lifts it (measured on the embedded model: P(EOT) at
the end of trained answers 7e-9 after a cpu-demo run). ``lima.eot_init: mean`` keeps that old
start, for comparison (``bench/end_of_turn.py``). ``lima.eot_init: fitted`` (the default) then fits
the output row to the run's own data (``training/eot_fit.py``).

The chat template of ``lima.chat_format`` becomes the tokenizer's, so the checkpoint carries it
to the service and to vLLM. A base whose tokenizer starts every text with BOS gets that BOS in
the template.
"""

from __future__ import annotations

import logging

import torch

from lima import chat_format

log = logging.getLogger("lima.train")

EOT_INITS = ("fitted", "end-token", "mean")  # "fitted": the copy here, then training/eot_fit.py


def adds_bos(tokenizer) -> bool:
    ids = tokenizer("x").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def own_end_token(tokenizer) -> int | None:
    """The id the base ends a reply with: the first special token its own chat template puts after
    an assistant message, else EOS (a pretrained base without a template); None if it has neither."""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    if tokenizer.chat_template:
        marker = "Zq9 reply"  # text no template contains, to find where the reply ends
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": marker}], tokenize=False)
        except Exception:  # a template that refuses this shape: fall back to EOS
            text = ""
        if marker in text:
            after = tokenizer(text[text.index(marker) + len(marker):], add_special_tokens=False).input_ids
            found = next((i for i in after if i in special), None)
            if found is not None:
                return found
    return tokenizer.eos_token_id


@torch.no_grad()
def copy_rows(model, source: int, target: int) -> None:
    """Row ``target`` of the input embeddings (and of an untied output head) becomes row ``source``."""
    inputs = model.get_input_embeddings().weight
    inputs[target] = inputs[source]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != inputs.data_ptr():
        head.weight[target] = head.weight[source]
        if getattr(head, "bias", None) is not None:
            head.bias[target] = head.bias[source]


def setup(model, tokenizer, eot: str, init: str = "fitted") -> int:
    """Add ``eot`` and the LIMA template; returns the EOT token id. A token the tokenizer already
    has (a trained variant) keeps its rows."""
    if init not in EOT_INITS:
        raise ValueError(f"lima.eot_init must be one of {', '.join(EOT_INITS)}, got {init!r}")
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    new = eot not in tokenizer.get_vocab()
    source = own_end_token(tokenizer) if new else None
    if new:
        tokenizer.add_special_tokens({"extra_special_tokens": [eot]}, replace_extra_special_tokens=False)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    # Some bases (Qwen) have more embedding rows than tokens: only ever grow, never shrink.
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True, pad_to_multiple_of=64)
    if new and init != "mean":
        if source is None:
            log.warning("the base has no end-of-turn or EOS token: %s starts at the mean embedding", eot)
        else:
            copy_rows(model, source, eot_id)
            log.info("%s starts as a copy of the base's %s", eot, tokenizer.convert_ids_to_tokens(source))
    tokenizer.chat_template = chat_format.chat_template(bos=bos, eot=eot)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return eot_id


def prepare(model, tokenizer, lima, conversations: list[list[dict]], max_length: int, bf16: bool = False,
            on_fit=lambda reports: None, cancelled=lambda: False):
    """``setup`` with the recipe's ``lima`` block, then, for a new token and ``eot_init: fitted``,
    its output row fitted on ``conversations`` (a seeded shuffle of them, up to
    ``lima.eot_fit_tokens`` tokens). Returns (EOT id, the ``eot_fit.Refit`` callback that fits it
    again at each epoch's end, its ``reports`` starting with this fit; or None). ``on_fit(reports)``
    hears of every fit; ``cancelled()`` says when a run's weights will be thrown away."""
    import os
    import random

    from training import eot_fit

    new = lima.eot_token not in tokenizer.get_vocab()
    eot_id = setup(model, tokenizer, lima.eot_token, lima.eot_init)
    if not new or lima.eot_init != "fitted":
        return eot_id, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank must hold the same row: keep the copy
        log.info("a distributed run: %s keeps its copied start (the fit runs in single-process runs)", lima.eot_token)
        return eot_id, None
    order = list(conversations)
    random.Random(lima.seed).shuffle(order)  # long LIMA answers and short chain turns both take part
    refit = eot_fit.Refit(tokenizer, eot_id, order, max_length, lima.eot_fit_tokens, bf16, on_fit, cancelled)
    report = eot_fit.fit(model, tokenizer, eot_id, order, max_length, lima.eot_fit_tokens, bf16)
    if report is None:
        return eot_id, None
    refit.reports.append({"epoch": 0, "step": 0, **report})
    on_fit(refit.reports)
    return eot_id, refit
