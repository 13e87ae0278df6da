"""Where one decode step's time goes, against the floor that memory bandwidth sets.

    python bench/decode_step.py [--quantize fp16|int8|none] [--batch 1] [--steps 100]

On the embedded model and the lean decoder the service uses (``service/engines/fast_llama.py``):
  - the machine's read bandwidth (a float32 sum over 512 MB) and the weight bytes one step reads,
    so the time that reading every weight once per token takes at best;
  - one decode step (``--batch`` rows, a cache of ~30 tokens growing by ``--steps``), tokens/s;
  - the linear kernels alone, one call per weight as a step makes them;
  - torch's profiler over 20 steps: the linear kernel, attention, the compiled glue (norms, rope,
    activations), dynamo's guard check and the rest.
Run it twice on a noisy machine and compare within a run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from lima import embedded_model  # noqa: E402
from service.engines import kv_cache, weight_formats  # noqa: E402
from service.engines.transformers_engine import load_runner  # noqa: E402


def read_bandwidth() -> float:
    x = torch.ones(128 * 1024 * 1024)  # 512 MB of float32, far past any cache
    x.sum()
    start, runs = time.perf_counter(), 5
    for _ in range(runs):
        x.sum()
    return x.numel() * 4 * runs / (time.perf_counter() - start)


def linears(weights: dict) -> list:
    """Every packed weight one step multiplies by, in the order a step does."""
    return [layer[k] for layer in weights["layers"] for k in ("qkv", "o", "gate_up", "down")] + [weights["head"]]


def weight_bytes(weights: dict) -> int:
    def size(packed) -> int:
        tensors = [t for t in packed if isinstance(t, torch.Tensor)] if isinstance(packed, tuple) else [packed]
        return sum(t.numel() * t.element_size() for t in tensors)

    return sum(size(p) for p in linears(weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", choices=weight_formats.FORMATS, default="fp16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    bandwidth = read_bandwidth()
    # loaded and compiled as the service does it
    runner, tokenizer, *_ = load_runner("base", str(embedded_model.prepare()), "cpu", torch.float32, args.quantize,
                                        "lean")
    nbytes = weight_bytes(runner.weights)
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s; weights read per step {nbytes / 1e6:.1f} MB: "
          f"at best {nbytes / bandwidth * 1e3:.2f} ms per step ({bandwidth / nbytes:.0f} steps/s)")

    prompt = tokenizer("Explain how a bicycle's gears make climbing hills easier.").input_ids
    cache = kv_cache.new_cache(len(runner.weights["layers"]))
    with torch.inference_mode():
        # every row the same prompt: one prefill, its cache repeated for each row
        logits = runner.prefill(torch.tensor([prompt]), cache)
        for layer in cache.layers:
            layer.keys, layer.values = (layer.keys.expand(args.batch, -1, -1, -1).contiguous(),
                                        layer.values.expand(args.batch, -1, -1, -1).contiguous())
        length = len(prompt)
        state = {"mask": torch.ones(args.batch, length), "last": logits.argmax(-1).view(1, 1).expand(args.batch, 1),
                 "length": length}

        def step():
            state["mask"] = torch.cat([state["mask"], torch.ones(args.batch, 1)], 1)
            out = runner.decode(state["last"].contiguous(), state["mask"],
                                torch.full((args.batch,), state["length"]), cache)
            state["length"] += 1
            state["last"] = out.argmax(-1).view(-1, 1)

        for _ in range(10):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        per_step = (time.perf_counter() - start) / args.steps
        print(f"decode step, batch {args.batch}: {per_step * 1e3:.2f} ms = {args.batch / per_step:.1f} tokens/s; "
              f"weights read at {nbytes / per_step / 1e9:.1f} GB/s ({nbytes / bandwidth / per_step:.0%} of the floor)")

        packed = linears(runner.weights)
        # the input width: a float32 matrix's columns, or the K of a packed (N/16, K, 16) one
        inputs = [torch.randn(args.batch, w.blocks.shape[1] if isinstance(w, weight_formats.Packed) else w.shape[1])
                  for w in packed]
        start = time.perf_counter()
        for _ in range(10):
            for x, w in zip(inputs, packed):
                weight_formats.linear(x, w)
        alone = (time.perf_counter() - start) / 10
        print(f"linear kernels alone: {alone * 1e3:.2f} ms per step ({nbytes / alone / 1e9:.1f} GB/s)")

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
