"""A tiny Llama and a byte-level BPE tokenizer trained on the spot: no download, seconds to build."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "how do i boil an egg? put it in boiling water for nine minutes",
    "user assistant system hello thanks please explain why how what",
    "a list of steps: first, second, third. then check the result again.",
    "python code: def main(): return 0  # numbers 0 1 2 3 4 5 6 7 8 9",
]


def build_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def build_model(tokenizer, layers: int = 2, hidden: int = 64, context: int = 512, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def save_tiny_base(folder: Path, layers: int = 2, context: int = 512) -> Path:
    """A 'pretrained base': weights, tokenizer, no chat template (training adds the LIMA one)."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, layers=layers, context=context)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_variant(base: Path, folder: Path) -> Path:
    """``base`` as a trained variant leaves it: the EOT token added and the shared chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lima import chat_format
    from training import chat_setup

    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    chat_setup.setup(model, tokenizer, chat_format.EOT)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
