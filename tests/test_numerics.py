"""Numerical robustness: property-based GAAM against the float64 reference, and both model families on the inputs that
break naive implementations (constant, huge, all padding, length 1, low-precision autocast)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gaam_layer import _compare_with_reference, _randomised_reference
from transformers import GPT2Config

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaamGPT2LMHeadModel,
    HeadedConfig,
    HeadedModelForSequenceClassification,
)


@st.composite
def gaam_cases(draw):
    ndim = draw(st.integers(2, 4))
    axis = draw(st.integers(-ndim, ndim - 1))
    num_heads = draw(st.integers(1, 8))
    shape = [draw(st.integers(1, 4)) for _ in range(ndim)]
    shape[axis] = num_heads * draw(st.integers(2, 4)) + draw(st.integers(0, num_heads - 1))
    return tuple(shape), axis, num_heads, draw(st.integers(1, 12)), draw(st.integers(0, 2**31 - 1)), draw(
        st.sampled_from([1e-3, 1.0, 1e3])
    )


@settings(max_examples=40, deadline=None)
@given(gaam_cases())
def test_gaam_equals_the_float64_reference_on_random_configurations(case):
    shape, axis, num_heads, num_gaussians, seed, scale = case
    torch.manual_seed(seed)
    reference = _randomised_reference(axis, num_heads, num_gaussians)
    _compare_with_reference(reference, torch.randn(shape, dtype=torch.float64) * scale)


@st.composite
def padded_cases(draw):
    batch, length, width = draw(st.integers(1, 4)), draw(st.integers(2, 20)), draw(st.integers(1, 70))
    num_heads = draw(st.integers(1, 6))
    axis = draw(st.sampled_from([1, -1])) if width >= 2 * num_heads else 1
    # Each row: real positions anywhere (left, right, interleaved, none, fewer than the heads).
    mask = draw(st.lists(st.lists(st.integers(0, 1), min_size=length, max_size=length), min_size=batch,
                         max_size=batch))
    normalization = draw(st.sampled_from(["sum", "mean", "none"]))
    return (batch, length, width), axis, num_heads, draw(st.integers(1, 8)), mask, normalization, draw(
        st.integers(0, 2**31 - 1)
    )


@settings(max_examples=40, deadline=None)
@given(padded_cases())
def test_gaam_fused_kernel_equals_the_exact_path_on_random_padding(case):
    """Where the fused CPU kernel serves, it equals the exact path in float64, outputs and gradients."""
    import hf_heads.gaam.layer as gaam_layer
    from hf_heads import GaussianAdaptiveAttention

    shape, axis, num_heads, num_gaussians, mask, normalization, seed = case
    torch.manual_seed(seed)
    layer = GaussianAdaptiveAttention(num_heads, num_gaussians, axis, normalization=normalization).double()
    x, upstream = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    mask = torch.tensor(mask)

    def run(kernel):
        saved = gaam_layer._kernel
        gaam_layer._kernel = kernel
        try:
            x_run = x.clone().requires_grad_(True)
            layer.zero_grad(set_to_none=True)
            output = layer(x_run, attention_mask=mask)
            (output * upstream).sum().backward()
            return output, x_run.grad, layer.mean_offsets.grad, layer.c.grad
        finally:
            gaam_layer._kernel = saved

    kernel = gaam_layer._fused_kernel()
    if kernel is None:
        return  # no compiler here: only the exact path exists
    for fused, exact in zip(run(kernel), run(False)):
        torch.testing.assert_close(fused, exact, rtol=1e-9, atol=1e-11)


TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=60, n_positions=32, pad_token_id=0, bos_token_id=1,
            eos_token_id=1)


def gaam_classifier(**fields):
    torch.manual_seed(0)
    config = GaamGPT2Config(**TINY, num_labels=3, gaam_num_heads=2, classifier_pooling="mean", **fields)
    model = GaamGPT2ForSequenceClassification(config)
    with torch.no_grad():  # open the gates so GAAM's branch is live in "augment"
        for name, parameter in model.named_parameters():
            if "gaam_gate" in name:
                parameter.fill_(0.5)
    return model


def headed(head_type):
    torch.manual_seed(0)
    backbone = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=60, n_positions=32)
    return HeadedModelForSequenceClassification(HeadedConfig(backbone_config=backbone, head_type=head_type, num_labels=3))


MODELS = {
    "gaam_gpt2 augment features": lambda: gaam_classifier(),
    "gaam_gpt2 augment sequence": lambda: gaam_classifier(gaam_norm_axis="sequence"),
    "gaam_gpt2 replace sequence": lambda: gaam_classifier(gaam_placement="replace", gaam_norm_axis="sequence"),
    "headed gaam_layers": lambda: headed("gaam_layers"),
    "headed attention": lambda: headed("attention"),
}


def inputs(kind):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 60, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    if kind == "constant":
        return dict(input_ids=torch.full_like(ids, 7), attention_mask=mask)
    if kind == "all padding row":
        mask[1] = 0
        return dict(input_ids=ids, attention_mask=mask)
    if kind == "length 1":
        return dict(input_ids=ids[:, :1], attention_mask=mask[:, :1])
    if kind == "huge embeddings":
        return dict(inputs_embeds=torch.randn(3, 12, 32, generator=generator) * 1e4, attention_mask=mask)
    return dict(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("kind", ["constant", "all padding row", "length 1", "huge embeddings"])
@pytest.mark.parametrize("name", MODELS)
def test_models_give_finite_logits_and_gradients(name, kind):
    model = MODELS[name]()
    batch = inputs(kind)
    output = model(**batch, labels=torch.tensor([0, 1, 2]))
    output.loss.backward()
    assert torch.isfinite(output.logits).all(), name
    for parameter_name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("kind", ["all padding row", "length 1"])
@pytest.mark.parametrize("name", MODELS)
def test_inference_predicts_what_a_gradient_pass_predicts(name, kind):
    # PyTorch's attention has an inference-only fast path (eval mode, no autograd), where attention over no real
    # token used to be NaN while the same model predicted finite values with gradients enabled.
    model = MODELS[name]().eval()
    batch = inputs(kind)
    with torch.no_grad():
        inferred = model(**batch).logits
    assert torch.isfinite(inferred).all(), name
    torch.testing.assert_close(inferred, model(**batch).logits.detach())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", MODELS)
def test_models_under_cpu_autocast_stay_finite_and_close(name, dtype):
    model = MODELS[name]().eval()
    batch = inputs("random")
    reference = model(**batch).logits
    with torch.autocast("cpu", dtype=dtype):
        output = model(**batch)
        output.logits.float().sum().backward()
    assert torch.isfinite(output.logits).all()
    torch.testing.assert_close(output.logits.float(), reference, rtol=0.1, atol=0.1)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_lm_on_constant_and_length_one_inputs():
    torch.manual_seed(0)
    model = GaamGPT2LMHeadModel(GaamGPT2Config(**TINY, gaam_num_heads=2))
    for ids in (torch.full((2, 10), 5), torch.tensor([[5], [9]])):
        output = model(input_ids=ids, labels=ids if ids.shape[1] > 1 else None)
        assert torch.isfinite(output.logits).all()
        if output.loss is not None:
            output.loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
