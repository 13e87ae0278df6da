"""Run the chat service: an OpenAI-compatible API over the transformers or the vLLM engine.

    lima serve [--host 127.0.0.1] [--port 8000] [--engine transformers|vllm] [--model NAME=PATH_OR_ID ...]

Serves ``base`` (the embedded SmolLM2-135M-Instruct, prepared on first run, unless ``--model
base=...`` or ``--base-model`` names another folder or hub id; ``--base-model none`` serves no
base), every model in the registry of ``$LIMA_HOME/lima.db`` (trained variants), and every
``--model``. A model that fails to load is reported (in the log,
in ``/health`` and to whoever asks for it) and the service starts on the others; it refuses to
start only when nothing loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from lima import children, embedded_model
from lima.hosts import is_loopback
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
                        help="what `base` is without --model base=...: a folder, a hub id, 'embedded' "
                             "(SmolLM2-135M-Instruct; default, or $LIMA_BASE_MODEL), or 'none' (no base: only "
                             "the --model and registered models)")
    parser.add_argument("--no-registry", action="store_true", help="do not serve the models registered by training")
    parser.add_argument("--api-key", default=os.environ.get("LIMA_API_KEY"),
                        help="require this bearer key (or set LIMA_API_KEY, which `ps` does not show)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a host other than loopback without --api-key (the admin routes are then open)")
    parser.add_argument("--quantize", choices=["fp16", "int8", "none"],
                        help="transformers engine on a CPU, the weights' format: fp16 (default; half float32's "
                             "memory, float32's answers), int8 (a quarter, faster; CHANGES ANSWERS: greedy replies "
                             "part from float32's at near-ties, perplexity +0.3%%), none (float32 as stored)")
    parser.add_argument("--prompt-products", choices=["float32", "bfloat16"], default="float32",
                        help="transformers engine on a CPU, how a prompt's linears multiply: float32 (default, "
                             "float32's answers) or, on a CPU with AVX512-BF16, bfloat16 pairs (first token about "
                             "1.4x sooner; CHANGES ANSWERS at near-ties); decoding stays float32 either way")
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
                             cpu_decoder=args.cpu_decoder, prompt_products=args.prompt_products)


def models_to_serve(args) -> tuple[dict[str, str], dict[str, str]]:
    """(named on the command line, from the registry), name: source, the first overriding the second;
    ``embedded`` stands for the embedded model, prepared (fetched and converted on the first run)
    when its turn to load comes."""
    from lima.store import connect
    from lima.store.registry import registered

    named = dict(parse_spec(spec) for spec in args.model)
    if "base" not in named and args.base_model != "none":
        named = {"base": args.base_model, **named}
    from_registry = {} if args.no_registry else {
        name: path for name, path in registered(connect()).items() if name not in named}
    if not named and not from_registry:
        raise ValueError("nothing to serve: --base-model none with no --model and no registered model "
                         "(give --model NAME=PATH, or drop --no-registry after a training run)")
    return named, from_registry


def _resolver(source: str):
    return (lambda: str(embedded_model.prepare())) if source == "embedded" else (lambda: source)


def check_exposure(args) -> None:
    """A service reachable from other machines must have a key: its admin routes load any folder or
    hub id, delete models and pause serving."""
    if not is_loopback(args.host) and not args.api_key and not args.insecure:
        raise ValueError(f"--host {args.host} opens the chat and admin routes (load any model, delete models, "
                         "pause serving) to the network, so a key is required: give --api-key KEY (or set "
                         "LIMA_API_KEY), or --insecure to serve without one anyway")


async def serve(args) -> int:
    import uvicorn

    from service.app import create_app
    from service.warmup import Warmup, load_all

    named, from_registry = models_to_serve(args)
    sources = {**named, **from_registry}
    engine = build_engine(args)
    warmup = Warmup(list(sources))
    app = create_app(engine, api_key=args.api_key, warmup=warmup)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    print(f"LIMA Studio service on http://{args.host}:{args.port}/v1, loading {', '.join(sources)}", flush=True)

    nothing_loaded = False

    async def load() -> None:
        nonlocal nothing_loaded
        # Loads run behind a listening server: /health tells what is loading, requests for a model
        # still loading are told to wait. One model that cannot load (out of GPU memory, a deleted
        # folder) must not take the others down; only when nothing loaded does the service stop.
        await load_all(warmup, {name: _resolver(source) for name, source in sources.items()}, engine.add_model,
                       lambda name, exc: log.error("skipping %s model: %s",
                                                   "registered" if name in from_registry else "named", exc))
        if not engine.models():
            nothing_loaded = True
            print("lima serve: no model could be loaded: " + "; ".join(warmup.failures.values()), file=sys.stderr)
            server.should_exit = True
        else:
            print(f"LIMA Studio service ready: serving {', '.join(m.name for m in engine.models())}", flush=True)

    loading = asyncio.ensure_future(load())
    try:
        await server.serve()
    finally:
        loading.cancel()
        await engine.close()
    return 2 if nothing_loaded else 0


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit, engine.close() still runs
    # and stops the vLLM servers this service started.
    children.signals_exit()
    children.exit_with_parent()
    try:
        check_exposure(args)
        return asyncio.run(serve(args))
    # RuntimeError: VllmUnavailable and friends, whose message says what to do
    except (ModelLoadError, embedded_model.PrepareError, ValueError, RuntimeError) as exc:
        print(f"lima serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
