"""Serving benchmark on the embedded model: the service over HTTP against plain ``model.generate``.

    python bench/serve.py [--tokens 96] [--prompts 3] [--model PATH]

Everything is measured in one run, on the same prompts, greedy, exactly ``--tokens`` new tokens
(``ignore_eos``), so the figures to read are the ratios:
  - service decode / plain generate in the same weight dtype (int8, the CPU default; and float32)
  - the service's lean compiled decoder / the service on transformers' forward (--cpu-decoder forward)
  - service decode / llama.cpp on the original GGUF (only where llama-cpp-python is installed)
  - aggregate tokens/s with 1, 4 and 8 concurrent streams, against 1
Peak memory is the service process's high-water mark (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import openai  # noqa: E402
import torch  # noqa: E402

from service import embedded_model  # noqa: E402
from ui.launch import start_service  # noqa: E402

PROMPTS = [
    "Explain how a bicycle's gears make climbing hills easier.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are three good habits for learning a new language?",
    "Describe how bread rises, step by step.",
]


def timed_generate(model, tokenizer, prompt: str, n: int) -> tuple[float, float]:
    """(time to first token, decode tokens/s) for plain greedy ``generate``."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        total = time.perf_counter() - start
    return ttft, (n - 1) / (total - ttft)


def timed_stream(base: str, prompt: str, n: int) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s, tokens) for one streamed request to the service."""
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    start = time.perf_counter()
    first = last = None
    usage = 0
    for chunk in client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": prompt}], max_tokens=n, temperature=0,
            stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True, "repetition_penalty": 1.0}):
        now = time.perf_counter()
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or now
            last = now
    return first - start, (usage - 1) / (last - first), usage


def llama_cpp_anchor(prompts: list[str], tokenizer, n: int) -> tuple[float, float] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        gguf = embedded_model.fetch_gguf(Path(tmp))
        llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
        results = []
        for prompt in prompts:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=False)
            start = time.perf_counter()
            times = [time.perf_counter() for _ in llm.create_completion(text, max_tokens=n, temperature=0,
                                                                          stream=True)]
            results.append((times[0] - start, (len(times) - 1) / (times[-1] - times[0])))
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS (now) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}


def concurrent(base: str, streams: int, n: int) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(streams)]
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        tokens = sum(r[2] for r in pool.map(lambda p: timed_stream(base, p, n), prompts))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--model", help="model folder (default: the prepared embedded model)")
    parser.add_argument("--port", type=int, default=8790, help="port for the service under test")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoTokenizer

    from service.engines.transformers_engine import load_model

    folder = Path(args.model) if args.model else embedded_model.prepare()
    prompts = PROMPTS[: args.prompts]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = []
    for quantize in ("none", "int8"):
        model, _ = load_model("bench", str(folder), "cpu", torch.float32, quantize)
        timed_generate(model, tokenizer, prompts[0], 8)  # warm-up
        runs = [timed_generate(model, tokenizer, p, args.tokens) for p in prompts]
        rows.append((f"plain generate ({'float32' if quantize == 'none' else 'int8'})",
                     statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
        del model

    services = [("float32", "lean", ["--quantize", "none"]), ("int8", "forward", ["--cpu-decoder", "forward"]),
                ("int8", "lean", [])]
    for dtype, decoder, flags in services:
        with tempfile.TemporaryDirectory() as logs:
            process, base = start_service(args.port, ["--no-registry", "--model", f"base={folder}", *flags],
                                          log=Path(logs) / "serve.log")
            try:
                timed_stream(base, prompts[0], 8)  # warm-up
                runs = [timed_stream(base, p, args.tokens) for p in prompts]
                rows.append((f"service over HTTP ({dtype}, {decoder})",
                             statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
                if (dtype, decoder) == ("int8", "lean"):  # the CPU default
                    aggregate = {k: concurrent(base, k, args.tokens) for k in (1, 4, 8)}
                    memory = memory_mib(httpx.get(base + "/health").json()["pid"])
            finally:
                process.terminate()
                process.wait(30)

    anchor = llama_cpp_anchor(prompts, tokenizer, args.tokens)
    if anchor:
        rows.append(("llama.cpp on the GGUF (Q4_1)", *anchor))

    speed = {name: tps for name, _, tps in rows}
    print(f"\n{args.tokens} greedy tokens, median of {len(prompts)} prompts, {torch.get_num_threads()} threads\n")
    print(f"{'path':40} {'first token':>12} {'decode tok/s':>13}")
    for name, ttft, tps in rows:
        print(f"{name:40} {ttft * 1000:>9.0f} ms {tps:>13.1f}")
    service, generate = speed["service over HTTP (int8, lean)"], speed["plain generate (int8)"]
    print("\nratios (decode tokens/s):")
    print(f"  service / plain generate, int8:     {service / generate:.2f}  (target >= 0.90)")
    print(f"  service / plain generate, float32:  "
          f"{speed['service over HTTP (float32, lean)'] / speed['plain generate (float32)']:.2f}  (target >= 0.90)")
    print(f"  lean decoder / transformers forward, service int8: "
          f"{service / speed['service over HTTP (int8, forward)']:.2f}")
    if anchor:
        print(f"  service int8 / llama.cpp:           {service / anchor[1]:.2f}  (target >= 0.50)")
    print(f"\nservice (int8) memory: peak {memory['VmHWM']:.0f} MiB, after the run {memory['VmRSS']:.0f} MiB")
    print(f"\n{'concurrent streams':20} {'aggregate tok/s':>16} {'vs 1 stream':>12}")
    for k, tps in aggregate.items():
        print(f"{k:<20} {tps:>16.1f} {tps / aggregate[1]:>12.2f}")
    if not anchor:
        print("\nllama-cpp-python is not installed: no llama.cpp anchor in this run "
              "(pip install llama-cpp-python, ~7 min to compile)")


if __name__ == "__main__":
    main()
