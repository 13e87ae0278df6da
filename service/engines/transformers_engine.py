"""The embedded engine: transformers models in this process, one continuous batcher each.

On a CPU weights are stored as float16 (``weight_formats``: decoding a small model is bound by
reading the weights once per token; float16 reads half of float32's bytes while activations and
arithmetic stay float32, so answers stay float32's (``--prompt-products bfloat16`` lets prompts
multiply in bfloat16 pairs, faster and not float32's answers); ``--quantize int8`` reads a quarter and
changes answers at near-ties; ``--quantize none`` serves float32) and Llama-family models decode
through the lean compiled decoder of ``fast_llama`` (``--cpu-decoder lean``, the default); other
architectures, or ``--cpu-decoder forward``, run transformers' ``forward`` with the same linears. On a GPU models load in
bfloat16 and run ``forward``. The model's own chat template renders prompts; a model without one
(a raw base model) gets the LIMA format with its own EOS as end of turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import torch

from lima import chat_format
from lima.model_files import Checkpoint, ModelLoadError, check_folder
from lima.paper import DECODING
from service.engines.base import (Delta, Engine, EngineUnavailable, ModelInfo, Prepared, PromptTooLong,
                                  StageCallback, UnknownModel)
from service.engines import fast_llama, weight_formats
from service.engines.constraints import Grammars
from service.engines.batcher import Batcher, ComputeThread, ForwardRunner, Sequence
from service.sampling import SamplingParams

log = logging.getLogger("lima.engine")


@dataclass
class LoadedModel:
    info: ModelInfo
    runner: object  # ForwardRunner or fast_llama.FastLlama
    tokenizer: object
    batcher: Batcher
    context_length: int
    grammars: Grammars


def context_length(model, tokenizer) -> int:
    config = model.config.get_text_config()
    n = getattr(config, "max_position_embeddings", None)
    if not n:
        n = tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else 2048
    return int(n)


def cannot_load(name: str, source: str, exc: Exception) -> ModelLoadError:
    """One message for every way a model's files fail to load: the model, the source, the cause."""
    return ModelLoadError(f"model '{name}': cannot load {source}: {type(exc).__name__}: {exc}")


def load_model(name: str, source: str, device: str, dtype: torch.dtype, weights: bool = True) -> tuple:
    """(model, tokenizer) as stored, on ``device`` in ``dtype``; with ``weights=False`` the model
    is an empty skeleton on the meta device (its config, generation config and modules; the
    weights are read by whoever converts them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = check_folder(name, source)
    src = str(path) if path else source
    try:
        if not weights:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
            with contextlib.suppress(OSError):  # a folder without generation_config.json
                model.generation_config = GenerationConfig.from_pretrained(src)
        elif path is not None and (path / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM  # a LoRA run's adapter: merge it for serving

            model = AutoPeftModelForCausalLM.from_pretrained(src, dtype=dtype).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(src)
    except Exception as exc:  # missing files, corrupt weights, unknown architecture: all the same to the user
        raise cannot_load(name, source, exc) from exc
    if tokenizer.chat_template is None:
        tokenizer.chat_template = chat_format.chat_template(eot=tokenizer.eos_token or "")
    if weights:
        model.eval().to(device)
    return model, tokenizer


def weight_format(quantize: str, name: str) -> str:
    """The format a model's weights are served in: the one asked for when the kernel builds, else float32."""
    if quantize == "none":
        return quantize
    problem = weight_formats.load()
    if problem:
        log.warning("model '%s' is served with float32 weights (the same answers, slower): %s", name, problem)
        return "none"
    return quantize


def _checkpoint(name: str, source: str) -> Checkpoint | None:
    try:
        return Checkpoint.of(check_folder(name, source))
    except Exception as exc:  # an unreadable safetensors header
        raise cannot_load(name, source, exc) from exc


def load_runner(name: str, source: str, device: str, dtype: torch.dtype, quantize: str, decoder: str,
                on_stage: StageCallback = lambda stage: None) -> tuple:
    """(runner, tokenizer, stop ids, context length) for the batcher; runs on the compute thread."""
    on_stage("loading the weights")
    # The lean decoder converts a safetensors checkpoint tensor by tensor as it reads it; the
    # rest (another architecture, .bin files, an adapter to merge) load whole through transformers.
    checkpoint = _checkpoint(name, source) if decoder == "lean" and device.startswith("cpu") else None
    with contextlib.closing(checkpoint) if checkpoint else contextlib.nullcontext():
        model, tokenizer = load_model(name, source, device, dtype, weights=checkpoint is None)
        reason = fast_llama.supports(model, device) if decoder == "lean" else "--cpu-decoder forward"
        if reason is not None and checkpoint is not None:
            model, tokenizer = load_model(name, source, device, dtype)
        stops, ctx = chat_format.stop_token_ids(model, tokenizer), context_length(model, tokenizer)
        if quantize != "none":
            on_stage(f"packing {quantize} weights (the first run also builds the kernels)")
        quantize = weight_format(quantize, name)
        if reason is None:
            try:
                runner = fast_llama.FastLlama(model, quantize=quantize, tensors=checkpoint)
            except Exception as exc:  # a truncated file, a tensor missing or of the wrong shape
                raise cannot_load(name, source, exc) from exc
    if reason is None:
        del model  # the lean decoder holds its own copy of every weight it needs
        on_stage("compiling the decoder (a minute the first time; cached after)")
        runner.warm_up()
    else:
        if device == "cpu":
            log.info("model '%s' decodes through transformers' forward: %s", name, reason)
        runner = ForwardRunner(weight_formats.pack_linears(model, quantize) if quantize != "none" else model)
    return runner, tokenizer, stops, ctx


class TransformersEngine(Engine):
    kind = "transformers"

    def __init__(self, device: str | None = None, quantize: str | None = None, max_batch: int = 8,
                 cpu_decoder: str = "lean", prompt_products: str = "float32"):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.quantize = quantize or ("fp16" if self.device == "cpu" else "none")
        if self.quantize != "none" and self.device != "cpu":
            raise ValueError(f"--quantize {self.quantize} is a CPU weight format; on a GPU models load in "
                             "bfloat16 (use --quantize none)")
        if prompt_products != "float32" and (self.device != "cpu" or self.quantize == "none"):
            raise ValueError(f"--prompt-products {prompt_products} is for the CPU's fp16 and int8 weights "
                             f"(here: {self.device}, --quantize {self.quantize})")
        self.max_batch, self.cpu_decoder = max_batch, cpu_decoder
        self.compute = ComputeThread("transformers-engine")
        if prompt_products != "float32":
            self._set_prompt_products(prompt_products)
        self._models: dict[str, LoadedModel] = {}
        self._sleeping = False
        self._lock = asyncio.Lock()

    def _set_prompt_products(self, kind: str) -> None:
        try:
            used = self.compute.call(weight_formats.set_prompt_products, kind).result()
        except RuntimeError as exc:  # the kernel cannot be built: float32 weights, float32 products
            log.warning("prompts multiply in float32: %s", exc)
            return
        if used != kind:
            log.warning("this CPU has no bfloat16 pairs (AVX512-BF16): prompts multiply in float32")
        else:
            log.info("prompts multiply in bfloat16 pairs (--prompt-products bfloat16): not float32's answers")

    # -- models -------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [m.info for m in self._models.values()]

    async def add_model(self, name: str, source: str, on_stage: StageCallback | None = None) -> ModelInfo:
        async with self._lock:  # one load at a time: loads are memory-hungry
            runner, tokenizer, stops, ctx = await asyncio.wrap_future(self.compute.call(
                load_runner, name, source, self.device, self.dtype, self.quantize, self.cpu_decoder,
                on_stage or (lambda stage: None)))
            grammars = Grammars(tokenizer, runner.config.get_text_config().vocab_size, stops)
            batcher = await asyncio.to_thread(self.compute.serve, runner, tokenizer, stops, self.max_batch, name,
                                              grammars.token_bytes)
            info = ModelInfo(name=name, source=source, engine=self.kind, context_length=ctx)
            old = self._models.get(name)
            self._models[name] = LoadedModel(info, runner, tokenizer, batcher, ctx, grammars)
        if old is not None:  # requests already running on the old weights finish on them
            await self._retire(old)
        log.info("serving %s from %s (%s, context %d)", name, source, self.device, ctx)
        return info

    async def remove_model(self, name: str) -> None:
        loaded = self._models.pop(name, None)
        if loaded is None:
            raise UnknownModel(name, list(self._models))
        await self._retire(loaded)

    async def _retire(self, loaded: LoadedModel) -> None:
        await asyncio.to_thread(loaded.batcher.stop, True, None)

    def _get(self, name: str) -> LoadedModel:
        if self._sleeping:
            raise EngineUnavailable("the model is retraining: serving resumes when the training run ends")
        loaded = self._models.get(name)
        if loaded is None:
            raise UnknownModel(name, list(self._models))
        return loaded

    # -- generation ---------------------------------------------------------------------------

    async def prepare(self, model: str, messages: list[dict[str, str]] | str, params: SamplingParams) -> Prepared:
        loaded = self._get(model)
        if isinstance(messages, str):  # a text completion: the prompt as it is, no chat template
            ids = (await asyncio.to_thread(loaded.tokenizer, messages))["input_ids"]
        else:
            ids = await asyncio.to_thread(loaded.tokenizer.apply_chat_template, messages,
                                          add_generation_prompt=True, tokenize=True, return_dict=False)
        n, ctx = len(ids), loaded.context_length
        if n >= ctx:
            raise PromptTooLong(f"The prompt is {n} tokens long; model '{model}' has a context of {ctx} tokens",
                                "prompt" if isinstance(messages, str) else "messages")
        if params.max_tokens is not None and n + params.max_tokens > ctx:
            raise PromptTooLong(f"max_tokens={params.max_tokens} plus the prompt's {n} tokens exceeds model "
                                f"'{model}''s context of {ctx} tokens; ask for at most {ctx - n}", "max_tokens")
        max_new = params.max_tokens or min(DECODING["max_tokens"], ctx - n)
        if params.choices:  # no choice takes more tokens than its bytes, and then the stop token
            max_new = min(max_new, max(len(c.encode()) for c in params.choices) + 1)
        matcher = await asyncio.to_thread(loaded.grammars.matcher, params) if params.constrained else None
        if params.logprobs is not None:
            # tokens' bytes come from llguidance's view of the tokenizer; its first build takes up to
            # a second, here rather than on the compute thread where it would stall every reply
            await asyncio.to_thread(loaded.grammars.ll_tokenizer)
        return Prepared(model, messages, params, n,
                        payload={"ids": ids, "max_new": max_new, "loaded": loaded, "matcher": matcher})

    async def stream(self, prepared: Prepared):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Delta] = asyncio.Queue()
        seq = Sequence(prepared.payload["ids"], prepared.params, prepared.payload["max_new"],
                       emit=lambda delta: loop.call_soon_threadsafe(events.put_nowait, delta),
                       matcher=prepared.payload["matcher"])
        prepared.payload["loaded"].batcher.submit(seq)
        try:
            while True:
                delta = await events.get()
                yield delta
                if delta.finish_reason:
                    return
        finally:
            seq.cancelled = True  # a closed stream (client gone) frees its batch row

    # -- accelerator sharing ------------------------------------------------------------------

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def gpus(self) -> str:
        if not self.device.startswith("cuda"):
            return "none"
        index = self.device.partition(":")[2]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible and index:
            return visible.split(",")[int(index)]
        return visible or index or "all"

    async def sleep(self, drain_timeout: float = 60) -> None:
        """Refuse new requests; on a GPU let running replies finish (up to ``drain_timeout``), then
        move every model to host memory so a training run can have the device."""
        self._sleeping = True
        if self.device.startswith("cuda"):
            deadline = asyncio.get_running_loop().time() + drain_timeout
            while any(not m.batcher.idle for m in self._models.values()):
                if asyncio.get_running_loop().time() > deadline:
                    for loaded in self._models.values():  # what still runs ends with a reason
                        await asyncio.wrap_future(self.compute.call(
                            loaded.batcher._fail_all, "the model is retraining: this reply was cut short"))
                    break
                await asyncio.sleep(0.2)
            for loaded in self._models.values():
                await asyncio.wrap_future(self.compute.call(loaded.runner.model.to, "cpu"))
            torch.cuda.empty_cache()

    async def wake(self) -> None:
        if self.device.startswith("cuda"):
            for loaded in self._models.values():
                await asyncio.wrap_future(self.compute.call(loaded.runner.model.to, self.device))
        self._sleeping = False

    async def close(self) -> None:
        await asyncio.to_thread(self.compute.close)
        self._models.clear()
