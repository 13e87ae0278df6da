"""Weight formats for serving on a CPU: float16 (the default), int8, or float32 as stored.

Decoding a small model on a CPU is bound by reading every weight once per token, so smaller
weights decode faster. Only the weights are stored smaller; activations and decoding's arithmetic
stay float32 (``linear_kernel.cpp``). A prompt (more than 32 rows at once) is bound by arithmetic
instead: with ``set_prompt_products("bfloat16")`` (``lima serve --prompt-products bfloat16``) and
a CPU with AVX512-BF16, its inputs and weights are rounded to bfloat16 and multiplied in pairs
with float32 sums, twice float32's rate. Off by default: perplexity moves only +0.03%, but the
top token changes where float32 decides (35 of 8,982 positions of the chains at margins of 0.01
or more, against 0 for float32 products). Not torch's ``set_float32_matmul_precision("medium")``:
that also puts torch's CPU attention into bfloat16, 5x slower for a decode step here.

Measured on the embedded model (``bench/serve.py``, 50 greedy replies of 48 tokens against
float32's, perplexity on the project's chains):

  fp16  half float32's bytes; perplexity +0.02%, 97% of float32's greedy text repeated, 48 of
        50 replies identical: float32's answers. The default.
  int8  one scale per output row, a quarter of float32's bytes, about 1.5x faster than fp16;
        perplexity +0.3%, but greedy replies part from float32's at near-ties (45% of the text
        repeated, 11 of 50 identical). Changes answers: opt in with ``--quantize int8``.
  none  float32 as stored.

(torch's dynamic int8 linear, the default before, also rounds each input to 7 bits with one
scale per tensor: perplexity 4x float32's, replies different from the first word.)

Stored in the kernel's layout (``Packed``): blocks of 16 output rows, the 16 weights of each
input column side by side, so a decode step reads each block as one contiguous stream (about 2x
the bandwidth of row-major reads on the output layer here). ``unpack`` gives the plain matrix back.

The kernel is compiled once per machine and torch version with ``torch.utils.cpp_extension`` into
``$LIMA_CACHE/linear-<hash>/`` (seconds) and registered as ``torch.ops.lima.fp16_linear`` and
``torch.ops.lima.int8_linear``, which ``torch.compile`` calls as opaque kernels. Where it cannot
be built (no C++ compiler), ``load()`` says why and the engine serves float32.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lima import home

FORMATS = ("fp16", "int8", "none")
KERNEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "linear_kernel.cpp")
# The instruction sets the kernel is written for, by what torch detects on this CPU.
FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"], "AVX2": ["-mavx2", "-mfma", "-mf16c"]}

_lock = threading.Lock()
_state: dict[str, str | None] = {}


def load() -> str | None:
    """Build (first time) and load the kernel; None when the ``lima`` operators are ready, else
    the reason they cannot be. Safe to call from any thread, any number of times."""
    with _lock:
        if "problem" not in _state:
            _state["problem"] = _build()
        return _state["problem"]


def require(fmt: str) -> None:
    """Make sure ``fmt`` can be computed here: the kernel is loaded for fp16 and int8, or RuntimeError."""
    if fmt != "none" and (problem := load()):
        raise RuntimeError(problem)


def _flags() -> list[str]:
    # -fopenmp: at::parallel_for splits the rows across torch's threads only when OpenMP is on
    flags = ["-fopenmp", *FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]
    if "-mavx512f" in flags and torch.cpu._is_avx512_bf16_supported():
        flags.append("-mavx512bf16")  # prompts in bfloat16 pairs (linear_kernel.cpp, gemm_bf16)
    return flags


PROMPT_PRODUCTS = ("float32", "bfloat16")


def set_prompt_products(kind: str) -> str:
    """How the kernel multiplies a prompt's rows (inputs of more than 32 rows) from now on, for the
    whole process: "float32" (the default, as decoding) or "bfloat16" pairs, which only a CPU with
    AVX512-BF16 has; returns what it will use."""
    if kind not in PROMPT_PRODUCTS:
        raise ValueError(f"unknown prompt products {kind!r}: choose one of {', '.join(PROMPT_PRODUCTS)}")
    require("fp16")
    used = "bfloat16" if kind == "bfloat16" and "-mavx512bf16" in _flags() else "float32"
    torch.ops.lima.set_prompt_bfloat16(used == "bfloat16")
    _state["prompts"] = used
    return used


def prompt_products() -> str:
    """How the kernel multiplies a prompt's rows now: "float32" or "bfloat16" (``set_prompt_products``)."""
    return _state.get("prompts", "float32")


def _build() -> str | None:
    try:
        import ninja  # the build tool torch's extension loader runs; pip installs it beside us

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    from torch.utils.cpp_extension import load as build

    flags = _flags()
    with open(KERNEL, "rb") as f:
        source = f.read()
    key = hashlib.sha256(source + " ".join(flags).encode() + torch.__version__.encode()).hexdigest()[:12]
    directory = home.cache_dir() / f"linear-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        build(name=f"lima_linear_{key}", sources=[KERNEL], extra_cflags=["-O3", *flags],
              build_directory=str(directory), is_python_module=False, verbose=False)
    except Exception as exc:  # no compiler, no ninja, a broken toolchain: float32 instead, said once
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return f"the CPU linear kernel could not be built ({type(exc).__name__}: {first[:300]})"

    @torch.library.register_fake("lima::int8_linear")
    def _(x, weight, scale, n):
        return x.new_empty(*x.shape[:-1], n)

    @torch.library.register_fake("lima::fp16_linear")
    def _(x, weight, n):
        return x.new_empty(*x.shape[:-1], n)

    return None


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, float32 scale per output row): the row's largest magnitude maps to 127."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


BLOCK = 16  # output rows per block of the kernel's layout


class Packed(NamedTuple):
    """A weight in the kernel's layout: ``blocks`` (N/16, K, 16), float16 or int8, the 16 weights of
    16 consecutive outputs side by side for each input column (N padded to a multiple of 16 with
    zero rows); ``scale`` one float32 per (padded) output row for int8, else None; ``out_features`` N."""

    blocks: torch.Tensor
    scale: torch.Tensor | None
    out_features: int


def pack(weight: torch.Tensor, fmt: str):
    """``weight`` in ``fmt``: a ``Packed`` for fp16 and int8, a float32 tensor for none."""
    weight = weight.detach()
    if fmt == "none":
        return weight.float().contiguous()
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}: choose one of {', '.join(FORMATS)}")
    values, scale = quantize_int8(weight) if fmt == "int8" else (weight.half(), None)
    pad = -weight.shape[0] % BLOCK  # zero rows up to a whole block
    if pad:  # (a copy; most weights need none, and the output layer's copy would be 57 MB here)
        values, scale = F.pad(values, (0, 0, 0, pad)), None if scale is None else F.pad(scale, (0, pad), value=1.0)
    blocks = values.view(-1, BLOCK, weight.shape[1]).transpose(1, 2).contiguous()
    return Packed(blocks, scale, weight.shape[0])


def unpack(packed) -> torch.Tensor:
    """The float32 (N, K) matrix a packed weight stands for."""
    if not isinstance(packed, Packed):
        return packed
    blocks = packed.blocks.float() if packed.scale is None else \
        packed.blocks.float() * packed.scale.view(-1, 1, BLOCK)
    return blocks.transpose(1, 2).reshape(-1, blocks.shape[1])[:packed.out_features]


def rows(packed, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of the float32 matrix a weight stands for, shape ``ids.shape + (K,)``: an
    embedding looked up in the output layer it is tied to, without a float32 copy of either."""
    if not isinstance(packed, Packed):
        return packed[ids]
    picked = packed.blocks[ids // BLOCK, :, ids % BLOCK].float()
    return picked if packed.scale is None else picked * packed.scale[ids].unsqueeze(-1)


def linear(x: torch.Tensor, packed) -> torch.Tensor:
    """x @ W^T for a weight packed by ``pack``; float32 in, float32 out."""
    if not isinstance(packed, Packed):
        return torch.nn.functional.linear(x, packed)
    if packed.scale is not None:
        return torch.ops.lima.int8_linear(x, packed.blocks, packed.scale, packed.out_features)
    return torch.ops.lima.fp16_linear(x, packed.blocks, packed.out_features)


class PackedLinear(torch.nn.Module):
    """A drop-in for ``nn.Linear`` with packed weights (transformers' own forward uses it)."""

    def __init__(self, source: torch.nn.Linear, fmt: str):
        super().__init__()
        require(fmt)
        self.packed = pack(source.weight, fmt)
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().float())
        self.in_features, self.out_features, self.format = source.in_features, source.out_features, fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = linear(x, self.packed)
        return y if self.bias is None else y + self.bias


def pack_linears(model: torch.nn.Module, fmt: str) -> torch.nn.Module:
    """Swap every ``nn.Linear`` of ``model`` for a ``PackedLinear`` in ``fmt``, in place."""
    for name, child in model.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(model, name, PackedLinear(child, fmt))
        else:
            pack_linears(child, fmt)
    return model
