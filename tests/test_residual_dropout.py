"""Residual dropout: 0.0 at the bottom layer rising to p at the top, off in eval, kept across save."""

import torch
from transformers import AutoModelForCausalLM

from training import residual_dropout
from tests.helpers.tiny_model import build_model, build_tokenizer


def tiny(layers=4):
    return build_model(build_tokenizer(), layers=layers)


def test_rates_rise_linearly_from_zero_to_top():
    assert residual_dropout.rates(4, 0.3) == [0.0, 0.1, 0.2, 0.3]
    model = tiny(layers=5)
    residual_dropout.attach(model, 0.2)
    assert model.config.lima_residual_dropout == [0.0, 0.05, 0.1, 0.15, 0.2]


def test_active_in_training_off_in_eval():
    model = tiny()
    ids = torch.randint(4, 300, (2, 12))
    model.eval()
    with torch.no_grad():
        reference = model(ids).logits
    handles = residual_dropout.attach(model, 0.3)
    assert len(handles) == 2 * 4
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference)  # eval: identity
        model.train()
        a, b = model(ids).logits, model(ids).logits
    assert not torch.equal(a, b) and not torch.equal(a, reference)


def test_bottom_layer_is_untouched_and_top_layer_drops():
    model = tiny()
    residual_dropout.attach(model, 0.3)
    model.train()
    layers = residual_dropout.decoder_layers(model)
    x = torch.ones(1, 200, 64)
    bottom, top = layers[0].mlp, layers[-1].mlp
    assert torch.equal(bottom(x), bottom._forward_hooks and bottom.forward(x))  # p = 0.0: unchanged
    out = top(x)
    dropped = (out == 0).float().mean().item()
    assert 0.2 < dropped < 0.4  # about 30% zeroed


def test_rates_survive_save_and_load(tmp_path):
    model = tiny()
    residual_dropout.attach(model, 0.3)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.lima_residual_dropout == [0.0, 0.1, 0.2, 0.3]
    assert not any(layer.mlp._forward_hooks for layer in residual_dropout.decoder_layers(loaded))  # serving: none
    handles = residual_dropout.attach(loaded)  # further training: the saved rates come back
    assert len(handles) == 8
    loaded.train()
    ids = torch.randint(4, 300, (1, 12))
    with torch.no_grad():
        assert not torch.equal(loaded(ids).logits, loaded(ids).logits)
