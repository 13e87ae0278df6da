"""LIMA's residual dropout: dropout on each sublayer's output before it joins the residual stream,
rising linearly from 0.0 at the bottom layer to ``top`` at the top layer (paper, section 3).

transformers has no config field for it, so forward hooks on each decoder layer's attention and
MLP drop their outputs in training mode only (``F.dropout`` is the identity in eval mode). The
per-layer rates are stored in the model config (``lima_residual_dropout``), so a saved checkpoint
remembers them: ``attach(model)`` on a reloaded model restores the same hooks for further
training, while serving (vLLM included) never attaches them.
"""

from __future__ import annotations

import torch.nn.functional as F

CONFIG_KEY = "lima_residual_dropout"


def decoder_layers(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "model.decoder.layers", "transformer.h"):
        node = inner
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        return list(node)
    raise ValueError(f"cannot find the decoder layers of {type(inner).__name__} for residual dropout")


def rates(num_layers: int, top: float) -> list[float]:
    return [round(top * i / max(num_layers - 1, 1), 6) for i in range(num_layers)]


def attach(model, top: float | None = None) -> list:
    """Hook every decoder layer; with ``top`` None, use the rates saved in the config."""
    layers = decoder_layers(model)
    config = model.config
    if top is not None:
        setattr(config, CONFIG_KEY, rates(len(layers), top))
    layer_rates = getattr(config, CONFIG_KEY, None)
    if not layer_rates:
        return []
    handles = []
    for layer, p in zip(layers, layer_rates):
        attention = getattr(layer, "self_attn", None) or getattr(layer, "attn")
        handles.append(attention.register_forward_hook(
            lambda module, args, out, p=p: (F.dropout(out[0], p, module.training), *out[1:])
            if isinstance(out, tuple) else F.dropout(out, p, module.training)))
        handles.append(layer.mlp.register_forward_hook(
            lambda module, args, out, p=p: F.dropout(out, p, module.training)))
    return handles
