"""Run the chat service: an OpenAI-compatible API over the transformers or the vLLM engine.

    lima serve [--host 127.0.0.1] [--port 8000] [--engine transformers|vllm] [--model NAME=PATH_OR_ID ...]

Serves ``base`` (the embedded SmolLM2-135M-Instruct, prepared on first run, unless ``--model
base=...`` or ``--base-model`` names another folder or hub id), every model in the registry of ``$LIMA_HOME/lima.db``
(trained variants), and every ``--model``. A model that fails to load is reported (in the log,
in ``/health`` and to whoever asks for it) and the service starts on the others; it refuses to
start only when nothing loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from lima import embedded_model
from lima.model_files import ModelLoadError, parse_spec
from service.engines.base import Engine

log = logging.getLogger("lima.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default=os.environ.get("LIMA_ENGINE", "transformers"))
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH_OR_ID",
                        help="serve a model folder or hub id under NAME (repeatable)")
    parser.add_argument("--base-model", default=os.environ.get("LIMA_BASE_MODEL", "embedded"),
                        help="what `base` is without --model base=...: a folder, a hub id, or 'embedded' "
                             "(SmolLM2-135M-Instruct; default, or $LIMA_BASE_MODEL)")
    parser.add_argument("--no-registry", action="store_true", help="do not serve the models registered by training")
    parser.add_argument("--api-key", default=os.environ.get("LIMA_API_KEY"), help="require this bearer key")
    parser.add_argument("--quantize", choices=["fp16", "int8", "none"],
                        help="transformers engine on a CPU, the weights' format: fp16 (default; half float32's "
                             "memory, float32's answers), int8 (a quarter, faster; CHANGES ANSWERS: greedy replies "
                             "part from float32's at near-ties, perplexity +0.3%%), none (float32 as stored)")
    parser.add_argument("--device", help="transformers engine: cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--cpu-decoder", choices=["lean", "forward"], default="lean",
                        help="transformers engine on a CPU: the compiled lean decoder for Llama-family models "
                             "(default) or transformers' forward")
    parser.add_argument("--max-batch", type=int, default=8, help="transformers engine: concurrent sequences per model")
    parser.add_argument("--vllm-executable", default=os.environ.get("LIMA_VLLM", "vllm"),
                        help="the `vllm` command of vLLM's own environment")
    parser.add_argument("--vllm-gpu-fraction", type=float, default=0.28, help="GPU memory share per vLLM model")
    parser.add_argument("--vllm-max-model-len", type=int, help="context length for vLLM models")


def build_engine(args) -> Engine:
    if args.engine == "vllm":
        from service.engines.vllm_engine import VllmEngine

        # LIMA_VLLM_REQUIRE_GPU=0 lets a stand-in `vllm` run where there is no GPU (the tests do).
        return VllmEngine(args.vllm_executable, gpu_fraction=args.vllm_gpu_fraction,
                          max_model_len=args.vllm_max_model_len,
                          require_gpu=os.environ.get("LIMA_VLLM_REQUIRE_GPU", "1") != "0")
    from service.engines.transformers_engine import TransformersEngine

    return TransformersEngine(device=args.device, quantize=args.quantize, max_batch=args.max_batch,
                             cpu_decoder=args.cpu_decoder)


def models_to_serve(args) -> tuple[dict[str, str], dict[str, str]]:
    """(named on the command line, from the registry), the first overriding the second."""
    from lima.store import connect
    from lima.store.registry import registered

    named = dict(parse_spec(spec) for spec in args.model)
    if "base" not in named:
        base = str(embedded_model.prepare()) if args.base_model == "embedded" else args.base_model
        named = {"base": base, **named}
    from_registry = {} if args.no_registry else {
        name: path for name, path in registered(connect()).items() if name not in named}
    return named, from_registry


async def serve(args) -> None:
    import uvicorn

    from service.app import create_app

    named, from_registry = models_to_serve(args)
    engine = build_engine(args)
    failures: dict[str, str] = {}
    # One model that cannot load (out of GPU memory, a deleted folder) must not take the others
    # down: it is reported, and the service starts on what did load.
    for kind, models in (("named", named), ("registered", from_registry)):
        for name, source in models.items():
            try:
                await engine.add_model(name, source)
            except ModelLoadError as exc:
                failures[name] = str(exc)
                log.error("skipping %s model: %s", kind, exc)
    if not engine.models():
        await engine.close()
        raise ModelLoadError("no model could be loaded: " + "; ".join(failures.values()))
    app = create_app(engine, api_key=args.api_key, failures=failures)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    print(f"LIMA Studio service on http://{args.host}:{args.port}/v1 serving {', '.join(m.name for m in engine.models())}",
          flush=True)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await engine.close()


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args))
    # RuntimeError: VllmUnavailable and friends, whose message says what to do
    except (ModelLoadError, embedded_model.PrepareError, ValueError, RuntimeError) as exc:
        print(f"lima serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
