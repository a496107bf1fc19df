"""Weight-initialisation schemes: what they touch (new weight matrices) and what they leave alone."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_heads.training.initialization import WEIGHT_INIT_SCHEMES, initialize_new_weights


def tiny_lm():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=16))


@pytest.mark.parametrize("scheme", [s for s in WEIGHT_INIT_SCHEMES if s != "default"])
def test_every_scheme_changes_matrices_and_leaves_embeddings(scheme):
    model = tiny_lm()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    changed = initialize_new_weights(model, scheme)
    assert "transformer.h.0.attn.c_attn.weight" in changed and "transformer.h.0.mlp.c_fc.bias" in changed
    for name, parameter in model.named_parameters():
        if name in changed and name.endswith("weight"):
            assert not torch.equal(parameter, before[name]), name
        if name not in changed:
            assert torch.equal(parameter, before[name]), name
    # The LM head is tied to the token embeddings: an embedding, not a new matrix.
    assert torch.equal(model.transformer.wte.weight, before["transformer.wte.weight"])


def test_xavier_uses_gpt2_conv1d_fans():
    model = tiny_lm()
    initialize_new_weights(model, "xavier_uniform")
    weight = model.transformer.h[0].attn.c_attn.weight  # Conv1D (in=32, out=96)
    bound = (6 / (32 + 96)) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound


def test_only_the_named_new_parameters_change():
    model = tiny_lm()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    changed = initialize_new_weights(model, "orthogonal", {"transformer.h.0.mlp.c_proj.weight"})
    assert changed == ["transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias"]
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, before["transformer.h.0.attn.c_attn.weight"])


def test_default_keeps_the_model_initialisation_and_unknown_schemes_fail():
    model = tiny_lm()
    assert initialize_new_weights(model, "default") == []
    with pytest.raises(ValueError, match=r"`weight_init`='he' is not supported; accepted: default, xavier_uniform"):
        initialize_new_weights(model, "he")
