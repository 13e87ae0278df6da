"""A lean decoder for Llama-family models on the CPU: compact weights, fused projections, compiled.

Why it exists: decoding the embedded 135M model through transformers' ``forward`` spends more time
dispatching ~1,000 small operators per token than multiplying matrices. This decoder runs the
same arithmetic with four matrix products per layer (q/k/v and gate/up fused), weights in a
compact format (``weight_formats``: float16 by default, float32 activations and arithmetic) and
the rest compiled by ``torch.compile`` into a few fused kernels. Measured by ``bench/serve.py``.

It reads and writes the batcher's KV cache (``kv_cache.GrowableLayer``: left-aligned rows, one
shared column per step), so continuous batching works unchanged. Prefill runs eagerly (one call
per request); every decode step runs the compiled graph, with the batch size and the cache length
symbolic so neither recompiles it. Weights are graph inputs, so every model of one shape (the
base and each retrained variant) shares one compiled graph, and inductor's disk cache hits across
loads. Where compiling fails (no C++ compiler) it decodes eagerly.

Models it does not cover (another architecture, rope that changes with length, biases) are
served by transformers' own ``forward``; ``supports`` says which.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lima import home
from service.engines import weight_formats

log = logging.getLogger("lima.fast_llama")

# Compiled kernels go to the machine-wide cache: a cold compile of the 135M model takes about a
# minute here, a cached one seconds. Set now, before anything asks inductor for its cache folder
# (it then writes its /tmp default into this variable).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home.cache_dir() / "inductor"))


@dataclass(frozen=True)
class Shape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float


def decoder_step(shape: Shape, weights: dict, tokens, positions, keys: list[torch.Tensor],
                 values: list[torch.Tensor], columns, mask, every_position: bool = False) -> torch.Tensor:
    """Logits of each row's last token (of every token with ``every_position``).
    ``tokens``/``positions``: (B, S); ``keys``/``values``: one (B, kv_heads, capacity, head_dim)
    buffer per layer, written at ``columns`` (S,); ``mask``: (B, 1, S, L), True where a query
    may attend among the first L columns (those in use), or None for a prompt written from
    column 0: query i attends columns 0..i, and the attention kernel skips the blocks above the
    diagonal instead of computing them to mask them out (half its time on a 1,500-token prompt,
    the same results to the bit)."""
    batch, steps = tokens.shape
    heads, kv_heads, head_dim, hidden = shape.heads, shape.kv_heads, shape.head_dim, shape.hidden
    x = weight_formats.rows(weights["embed"], tokens)
    freqs = positions.unsqueeze(-1).float() * weights["inv_freq"]
    angles = torch.cat([freqs, freqs], dim=-1).unsqueeze(1)
    cos, sin = angles.cos() * weights["rope_scale"], angles.sin() * weights["rope_scale"]
    half = head_dim // 2
    q_end, k_end = heads * head_dim, (heads + kv_heads) * head_dim
    # attend to the columns in use only, not the buffer's whole capacity (up to twice as many
    # after it doubled): a step's attention reads every column it is given, masked or not
    span = steps if mask is None else mask.shape[-1]

    def rope(t):
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

    for i, layer in enumerate(weights["layers"]):
        h = F.rms_norm(x, (hidden,), layer["norm1"], shape.eps)
        qkv = weight_formats.linear(h, layer["qkv"])
        q = qkv[..., :q_end].view(batch, steps, heads, head_dim).transpose(1, 2)
        k = qkv[..., q_end:k_end].view(batch, steps, kv_heads, head_dim).transpose(1, 2)
        v = qkv[..., k_end:].view(batch, steps, kv_heads, head_dim).transpose(1, 2)
        keys[i].index_copy_(2, columns, rope(k))
        values[i].index_copy_(2, columns, v)
        attn = F.scaled_dot_product_attention(rope(q), keys[i].narrow(2, 0, span), values[i].narrow(2, 0, span),
                                              attn_mask=mask, is_causal=mask is None, enable_gqa=True)
        x = x + weight_formats.linear(attn.transpose(1, 2).reshape(batch, steps, heads * head_dim), layer["o"])
        h = F.rms_norm(x, (hidden,), layer["norm2"], shape.eps)
        gate, up = weight_formats.linear(h, layer["gate_up"]).chunk(2, dim=-1)
        x = x + weight_formats.linear(F.silu(gate) * up, layer["down"])
    x = F.rms_norm(x if every_position else x[:, -1], (hidden,), weights["norm"], shape.eps)
    return weight_formats.linear(x, weights["head"])


# Weights are graph inputs, so one entry per model shape and batch kind (1 or more) is needed;
# the default limit of 8 would silently fall back to eager after a few shapes.
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
_compiled_step = torch.compile(decoder_step, fullgraph=True)


def supports(model, device: str) -> str | None:
    """None when the lean decoder can serve ``model`` on ``device``, else the reason it cannot."""
    config = model.config
    if not device.startswith("cpu"):
        return "the lean decoder runs on the CPU only"
    if config.model_type != "llama":
        return f"architecture {config.model_type!r} is served by transformers"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "projection biases are served by transformers"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "a non-standard MLP is served by transformers"
    rope_type = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope_type not in ("default", "llama3", "linear"):  # these have one fixed inv_freq
        return f"rope type {rope_type!r} is served by transformers"
    return None


class FastLlama:
    """The decoder of one loaded model; ``prefill`` and ``decode`` are what the batcher calls."""

    def __init__(self, model, quantize: str = "fp16", compile: bool = True, tensors=None):
        """``model``: a transformers Llama, whose weights are read from ``tensors`` when given (a
        ``model_files.Checkpoint``: then ``model`` may be an empty skeleton on the meta device),
        else from the model itself. Each weight is converted as it is read, and for fp16 and int8
        nothing of the source is kept: the source can be freed once this returns."""
        config = model.config
        self.config = config
        self.device = torch.device("cpu")
        self.shape = Shape(hidden=config.hidden_size, heads=config.num_attention_heads,
                           kv_heads=config.num_key_value_heads,
                           head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
                           eps=float(config.rms_norm_eps))
        weight_formats.require(quantize)
        tensors = model.state_dict() if tensors is None else tensors

        def linear(*names):
            return weight_formats.pack(torch.cat([tensors[n] for n in names]) if len(names) > 1 else tensors[names[0]],
                                       quantize)

        def vector(name):  # a copy: a float32 view would keep its whole source alive
            return tensors[name].detach().float().clone()

        layers = []
        for i in range(config.num_hidden_layers):
            at, mlp = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            layers.append({
                "qkv": linear(at + "q_proj.weight", at + "k_proj.weight", at + "v_proj.weight"),
                "o": linear(at + "o_proj.weight"),
                "gate_up": linear(mlp + "gate_proj.weight", mlp + "up_proj.weight"),
                "down": linear(mlp + "down_proj.weight"),
                "norm1": vector(f"model.layers.{i}.input_layernorm.weight"),
                "norm2": vector(f"model.layers.{i}.post_attention_layernorm.weight"),
            })
        tied = config.get_text_config().tie_word_embeddings
        head = linear("model.embed_tokens.weight" if tied else "lm_head.weight")
        # The embedding is looked up in the output layer when the two are tied (one float16 copy
        # of the largest matrix instead of that and a float32 one); int8 keeps its table in
        # float16 so that int8 changes the matrix products only.
        embed = head if tied and quantize != "int8" else \
            weight_formats.pack(tensors["model.embed_tokens.weight"], "fp16" if quantize == "int8" else quantize)
        # The rope's frequencies as transformers computes them for this config (the model may be
        # a skeleton without buffers).
        rotary = type(model.model.rotary_emb)(config)
        self.weights = {
            "layers": layers,
            "embed": embed,
            "norm": vector("model.norm.weight"),
            "head": head,
            "inv_freq": rotary.inv_freq.float(),
            "rope_scale": float(getattr(rotary, "attention_scaling", 1.0)),
        }
        self.compiled = compile

    def _run(self, step, tokens, positions, keys, values, columns, mask, every_position=False) -> torch.Tensor:
        return step(self.shape, self.weights, tokens, positions, keys, values, columns, mask, every_position)

    def _buffers(self, batch: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, self.shape.kv_heads, capacity, self.shape.head_dim)
        return torch.zeros(shape), torch.zeros(shape)

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """(S, V) logits at every position of ``ids``, as prefill computes them (for perplexity)."""
        steps = len(ids)
        buffers = [self._buffers(1, steps) for _ in self.weights["layers"]]
        return self._run(decoder_step, torch.tensor([ids]), torch.arange(steps).unsqueeze(0), [b[0] for b in buffers],
                         [b[1] for b in buffers], torch.arange(steps), None, every_position=True)[0]

    def prefill(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """Run a whole prompt (1, S) into a fresh ``cache``; returns the last token's logits (1, V)."""
        steps = ids.shape[1]
        capacity = max(steps, 64)
        buffers = [self._buffers(1, capacity) for _ in cache.layers]
        logits = self._run(decoder_step, ids, torch.arange(steps).unsqueeze(0), [b[0] for b in buffers],
                           [b[1] for b in buffers], torch.arange(steps), None)
        for layer, (k, v) in zip(cache.layers, buffers):
            layer.adopt(k, v, steps)
        return logits

    def decode(self, last: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """One step for the batch: ``last`` (B, 1) tokens, ``mask`` (B, length + 1) with the new
        column, ``positions`` (B,); writes column ``length`` of every layer; returns (B, V)."""
        layers = cache.layers
        length = layers[0].length
        for layer in layers:
            # one column to spare: the compiled step attends to a narrowed view of the buffer and
            # was compiled for one narrower than its buffer; a view as wide as the buffer would be
            # contiguous, fail that guard and compile the step again
            layer.reserve(length + 2)
        attend = mask.bool().view(mask.shape[0], 1, 1, length + 1)
        args = (last, positions.view(-1, 1), [layer.keys for layer in layers], [layer.values for layer in layers],
                torch.tensor([length]), attend)
        try:
            logits = self._run(_compiled_step if self.compiled else decoder_step, *args)
        except Exception as exc:  # e.g. a recompile limit: slower from now on, never a failed reply
            if not self.compiled:
                raise
            log.warning("compiled decoding failed, decoding without compilation: %s", str(exc).splitlines()[0])
            self.compiled = False
            logits = self._run(decoder_step, *args)  # rewrites the same cache column
        for layer in layers:
            layer.length += 1
        return logits

    def warm_up(self) -> None:
        """Compile now instead of on the first request: one graph for a batch of 1 (size 1 is
        always specialised) and one for any larger batch, both for any cache length. Falls back
        to eager decoding where compiling is impossible."""
        if not self.compiled:
            return
        log.info("compiling the lean decoder (about a minute the first time for a model shape, "
                 "seconds once cached in %s)", os.environ["TORCHINDUCTOR_CACHE_DIR"])
        layers = len(self.weights["layers"])
        try:
            # in inference mode as in the batcher: grad mode and inference tensors are guarded,
            # so warming up outside it would leave the real requests to compile again
            with torch.inference_mode():
                for batch in (1, 2):
                    self._warm_up(batch, layers)
        except Exception as exc:  # a missing C++ compiler, an inductor bug: slower, not broken
            log.warning("compiling the decoder failed, decoding without compilation: %s: %s",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.compiled = False

    def _warm_up(self, batch: int, layers: int) -> None:
        """Compile for ``batch`` rows (2 stands for any number above 1), any cache length."""
        tokens, positions = torch.zeros(batch, 1, dtype=torch.long), torch.full((batch, 1), 3)
        buffers = [self._buffers(batch, 128) for _ in range(layers)]
        keys, values = [k for k, _ in buffers], [v for _, v in buffers]
        mask = torch.ones(batch, 1, 1, 97, dtype=torch.bool)  # columns in use: fewer than the capacity
        for tensor in keys + values:
            torch._dynamo.mark_dynamic(tensor, 2)  # cache length
        torch._dynamo.mark_dynamic(mask, 3)
        if batch > 1:
            for tensor in keys + values + [mask, tokens, positions]:
                torch._dynamo.mark_dynamic(tensor, 0)  # batch size
        # no duck sizing, or a capacity equal to head_dim would be guarded equal to it
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            self._run(_compiled_step, tokens, positions, keys, values, torch.tensor([3]), mask)
