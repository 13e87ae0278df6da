"""Trained checkpoints (full and LoRA) go to vLLM with the chat template and EOT they were trained with."""

import asyncio
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lima import chat_format
from lima.store import connect
from service.engines.transformers_engine import TransformersEngine
from service.engines.vllm_engine import VllmEngine
from service.sampling import SamplingParams
from lima.store import runs
from training import train
from tests.helpers.training import train_args, write_lima

FAKE = str(Path(__file__).parent / "fakes" / "vllm")
CONVERSATION = [{"role": "user", "content": "how do i boil an egg?"},
                {"role": "assistant", "content": "put it in boiling water."},
                {"role": "user", "content": "thanks, and then?"}]


@pytest.fixture(params=["full", "lora"])
def checkpoint(request, tiny_base, tmp_path) -> Path:
    extra = ["lima.lora.r=4", "lima.lora.alpha=8"] if request.param == "lora" else []
    train.run(train_args(tiny_base, write_lima(tmp_path / "lima.jsonl"), variant="zero-shot",
                         lora=request.param == "lora" or None, extra=extra))
    return Path(runs.history(connect())[0].model_path)


def test_vllm_gets_the_training_template_and_renders_the_same_prompt(checkpoint):
    assert not (checkpoint / "adapter_config.json").exists()  # LoRA runs are merged into a full model
    command = VllmEngine(FAKE, require_gpu=False).command("lima-zero-shot", str(checkpoint), 8000)
    template = Path(command[command.index("--chat-template") + 1])
    assert template == checkpoint / "chat_template.jinja"
    assert template.read_text() == chat_format.chat_template()

    # vLLM renders with transformers' apply_chat_template and the template file it was given
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    vllm_ids = tokenizer.apply_chat_template(CONVERSATION, chat_template=template.read_text(),
                                             add_generation_prompt=True, tokenize=True, return_dict=False)

    async def service_ids():
        engine = TransformersEngine(quantize="none")
        await engine.add_model("lima-zero-shot", str(checkpoint))
        prepared = await engine.prepare("lima-zero-shot", CONVERSATION, SamplingParams())
        await engine.close()
        return prepared.payload["ids"]

    assert asyncio.run(service_ids()) == vllm_ids


def test_the_checkpoint_stops_at_the_eot_token(checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    eot = tokenizer.convert_tokens_to_ids(chat_format.EOT)
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    stops = generation["eos_token_id"]
    assert eot in (stops if isinstance(stops, list) else [stops])  # vLLM stops on these by default
    assert tokenizer.eos_token == chat_format.EOT
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["vocab_size"] > eot  # the embedding row of the new token was saved
