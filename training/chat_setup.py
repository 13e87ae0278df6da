"""Prepare a base model and tokenizer for the LIMA format: the EOT token and the shared template.

The EOT token is added as a new special token (the pretrained EOS keeps its old meaning), the
embeddings are resized (new rows start at the mean of the old ones), and the chat template of
``lima.chat_format`` becomes the tokenizer's, so the checkpoint carries it to the service and
to vLLM. A base whose tokenizer starts every text with BOS gets that BOS in the template.
"""

from __future__ import annotations

from lima import chat_format


def adds_bos(tokenizer) -> bool:
    ids = tokenizer("x").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def setup(model, tokenizer, eot: str) -> int:
    """Add ``eot`` and the LIMA template; returns the EOT token id."""
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    if eot not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [eot]}, replace_extra_special_tokens=False)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    # Some bases (Qwen) have more embedding rows than tokens: only ever grow, never shrink.
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True, pad_to_multiple_of=64)
    tokenizer.chat_template = chat_format.chat_template(bos=bos, eot=eot)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return eot_id
