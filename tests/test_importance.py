"""The Importance Factor: computed from the GAAM weights the model really uses, drawn as a heatmap."""

import pytest
import torch
from transformers import GPT2Config

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaussianAdaptiveAttention,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    importance_factors,
    plot_importance,
)


def batches(count=3, size=4, length=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        input_ids = torch.randint(1, 100, (size, length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, :3] = 0  # a left-padded row
        yield {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.zeros(size, dtype=torch.long)}


def headed_gaam(**fields):
    torch.manual_seed(0)
    backbone = GPT2Config(n_layer=5, n_embd=32, n_head=4, vocab_size=100, n_positions=64)
    return HeadedModelForSequenceClassification(
        HeadedConfig(backbone_config=backbone.to_dict(), head_type="gaam_layers", num_labels=2, **fields)
    )


def test_layer_importance_equals_min_max_scaled_mean_weight():
    model = headed_gaam(gaam_num_heads=2).eval()
    factors = importance_factors(model, list(batches()))
    assert factors.names == ["head.gaam"]
    # Oracle: the weights recomputed from the pooled layer states the head sees.
    weights = []
    with torch.no_grad():
        for batch in batches():
            states = model.backbone_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            weights.append(model.head.gaam(states["backbone_layer_states"], return_weights=True)[1])
    mean = torch.cat(weights).mean((0, 2))
    expected = (mean - mean.min()) / (mean.max() - mean.min())
    torch.testing.assert_close(factors.factors[0], expected)
    assert factors.factors[0].shape == (6,) and factors.factors[0].min() == 0 and factors.factors[0].max() == 1
    torch.testing.assert_close(factors.per_head[0], torch.stack([expected[:3].mean(), expected[3:].mean()]))


def test_importance_follows_the_learned_gaussians():
    """Moving a head's Gaussian mean changes which layers it weights: the factor reads learned parameters."""
    model = headed_gaam()
    before = importance_factors(model, list(batches())).factors[0]
    with torch.no_grad():
        model.head.gaam.mean_offsets.fill_(2.0)
    after = importance_factors(model, list(batches())).factors[0]
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("axis", ["features", "sequence"])
def test_gaam_gpt2_gives_one_row_per_block_and_leaves_the_model_as_it_was(tmp_path, axis):
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(
        GaamGPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100, n_positions=64, gaam_norm_axis=axis,
                       gaam_num_heads=2, classifier_pooling="mean", num_labels=2)
    ).train()
    factors = importance_factors(model, batches())
    assert factors.names == [f"transformer.h.{i}.gaam" for i in range(3)]
    assert all(f.shape == ((32,) if axis == "features" else (10,)) for f in factors.factors)
    assert all(h.shape == (2,) for h in factors.per_head)
    assert model.training
    assert not any(module._forward_hooks for module in model.modules() if isinstance(module, GaussianAdaptiveAttention))
    path = plot_importance(factors, tmp_path / "importance.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_model_without_gaam_is_refused():
    model = HeadedModelForSequenceClassification(HeadedConfig(backbone_config=GPT2Config(n_layer=1, n_embd=32, n_head=4).to_dict()))
    with pytest.raises(ValueError, match="has no GAAM layer"):
        importance_factors(model, batches())
