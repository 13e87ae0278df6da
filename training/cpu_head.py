"""SFT's LM head on a CPU: the labelled positions' logits in one GEMM, in place of TRL's chunked head.

TRL's SFTTrainer always scores tokens through its fused, chunked LM head (``add_fused_lm_head``): it
never holds the whole ``[tokens, vocabulary]`` logits, which is what a GPU's memory needs. On a CPU it
has no Triton, so it scores every position (labelled or not) and runs the backward's two gradient
GEMMs in float32 with a cast per chunk (the float32-output bf16 ``addmm`` it uses on CUDA does not
exist on a CPU): about 40% of a cpu-demo step on the embedded model. A CPU micro-batch is small and
its memory ample, so here the head is one ordinary projection of the labelled positions (a bf16 GEMM
under autocast, as every other layer), followed by a float32 log-softmax. The outputs are TRL's own
(``FusedCausalLMOutput``: log-probabilities, entropy, whether the label is the top token), so TRL's
``compute_loss`` still normalises the loss, counts tokens and logs its metrics.

``bench/train.py`` shows both heads side by side (tokens/s and the per-step losses);
``tests/test_training_format.py`` holds this head's losses and gradients to TRL's.
"""

from __future__ import annotations

import types

# Beyond this many logits in one micro-batch (1 GiB of float32) TRL's chunked head, which never holds
# them all, is used instead: a CPU run of a larger model or longer texts stays within memory.
MAX_LOGITS = 1 << 28

# What TRL's fused head reads to scale or cap a model's logits; a head with any of these is left to TRL.
_SCALED_HEAD = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                "logits_scaling")


def replace(trainer) -> bool:
    """On a CPU, put the whole-logits head in front of TRL's fused one, on the model TRL patched (the
    base model under a LoRA wrapper). False, and nothing changed, on a GPU or for a head this does not
    cover (scaled or capped logits, router logits)."""
    from accelerate.utils import is_peft_model

    model = trainer.model.get_base_model() if is_peft_model(trainer.model) else trainer.model
    config = model.config.get_text_config()
    if next(model.parameters()).device.type != "cpu" or hasattr(config, "output_router_logits") or any(
            getattr(config, name, None) is not None for name in _SCALED_HEAD):
        return False
    model.forward = types.MethodType(_forward(model.forward), model)
    return True


def _scores(logits, picked):
    """Each labelled position's log-probability of its label (float32, with its gradient), and TRL's
    metrics in float32 as TRL gives them: the entropy, and whether the label was the top token."""
    import torch

    log_p = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    chosen = log_p.gather(1, picked[:, None]).squeeze(1)
    with torch.no_grad(), torch.autocast(log_p.device.type, enabled=False):
        entropy = -(log_p.exp() * log_p).sum(dim=-1)
        top1 = log_p.argmax(dim=-1) == picked
    return chosen, entropy, top1


def _forward(trl_forward):
    from trl.trainer.utils import FusedCausalLMOutput

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        targets = None if not fused_lm_head else shift_labels if shift_labels is not None else labels[:, 1:]
        vocab = self.get_output_embeddings().weight.shape[0]
        if targets is None or int((targets != -100).sum()) * vocab > MAX_LOGITS:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden = hidden[:, :-1]
        mask = targets != -100
        picked = targets[mask]
        logits = self.get_output_embeddings()(hidden[mask])  # bf16 under autocast, like every other layer
        chosen, entropy, top1 = _scores(logits, picked)

        def spread(values):  # per position, zero where there is no label, as TRL's head returns them
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        log_probs = spread(chosen)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=spread(entropy),
                                   is_top1=spread(top1), label_mask=mask)

    return forward
