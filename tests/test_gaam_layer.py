"""The GAAM op against its oracle (the reference package, float64) and the invariants of DESIGN.md."""

import random

import pytest
import torch
from gaussian_adaptive_attention import GaussianAdaptiveAttention as ReferenceSingleHead
from gaussian_adaptive_attention import MultiHeadGaussianAdaptiveAttention as ReferenceMultiHead

from hf_heads import GaussianAdaptiveAttention, from_reference


def _randomised_reference(axis, num_heads, num_gaussians, offset_scale=1.0, c_low=0.3, c_high=2.0):
    reference = ReferenceMultiHead(axis, num_heads, num_gaussians).double()
    with torch.no_grad():
        for head in reference.attention_heads:
            head.c.uniform_(c_low, c_high).mul_(torch.randint(0, 2, head.c.shape) * 2 - 1)  # both signs of c
            head.mean_offsets.normal_().mul_(offset_scale)
    return reference


def _reference_normaliser_is_clamped(reference, x):
    """True when some head's sum of densities is below eps, i.e. the reference's `max(sum, eps)` is active."""
    chunk = x.shape[reference.norm_axis] // reference.num_heads
    for index, head in enumerate(reference.attention_heads):
        end = x.shape[reference.norm_axis] if index == reference.num_heads - 1 else (index + 1) * chunk
        part = x.narrow(reference.norm_axis, index * chunk, end - index * chunk)
        mean, var = part.mean(reference.norm_axis, keepdim=True), part.var(reference.norm_axis, keepdim=True) + head.eps
        density = 1.0
        for g in range(head.num_gaussians):
            y = (part - mean - head.mean_offsets[g]) / var.sqrt()
            density = density * torch.exp(-(y**2) / (2 * head.c[g] ** 2)) / torch.sqrt(2 * torch.pi * head.c[g] ** 2)
        if (density.sum(reference.norm_axis) < head.eps).any():
            return True
    return False


def _sweep_cases(count, seed):
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        ndim = rng.choice([2, 3, 4])
        axis = rng.randrange(-ndim, ndim)
        num_heads = rng.randint(1, 16)
        shape = [rng.randint(1, 5) for _ in range(ndim)]
        shape[axis] = num_heads * rng.randint(2, 4) + rng.randint(0, num_heads - 1)  # remainders to the last head
        cases.append((tuple(shape), axis, num_heads, rng.randint(1, 20)))
    return cases


def _compare_with_reference(reference, x):
    ours = from_reference(reference)
    x_ref = x.clone().requires_grad_(True)
    x_ours = x.clone().requires_grad_(True)
    expected, actual = reference(x_ref), ours(x_ours)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)
    # A non-trivial upstream gradient so that every path of the backward is exercised.
    upstream = torch.randn_like(expected)
    grads_ref = torch.autograd.grad((expected * upstream).sum(), [x_ref, *reference.parameters()])
    grads_ours = torch.autograd.grad((actual * upstream).sum(), [x_ours, ours.mean_offsets, ours.c])
    torch.testing.assert_close(grads_ours[0], grads_ref[0], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads_ours[1], torch.stack(grads_ref[1::2]), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads_ours[2], torch.stack(grads_ref[2::2]), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("shape,axis,num_heads,num_gaussians", _sweep_cases(40, seed=0))
def test_outputs_and_gradients_equal_reference(shape, axis, num_heads, num_gaussians):
    torch.manual_seed(hash((shape, axis, num_heads, num_gaussians)) % 2**31)
    reference = _randomised_reference(axis, num_heads, num_gaussians)
    _compare_with_reference(reference, torch.randn(shape, dtype=torch.float64) * 3 + 1)


@pytest.mark.parametrize("seed", range(4))
def test_equals_reference_where_its_eps_clamp_is_active(seed):
    torch.manual_seed(seed)
    # Offsets far from the data and narrow Gaussians push every density of a head far below eps.
    reference = _randomised_reference(-1, 2, 3, offset_scale=8.0, c_low=0.2, c_high=0.5)
    x = torch.randn(3, 4, 12, dtype=torch.float64)
    assert _reference_normaliser_is_clamped(reference, x)
    _compare_with_reference(reference, x)


def test_converts_single_head_reference():
    reference = ReferenceSingleHead(norm_axis=1, num_heads=1, num_gaussians=4, padding_value=None).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    ours = from_reference(reference)
    assert ours.num_heads == 1 and ours.mean_offsets.shape == (1, 4)
    torch.testing.assert_close(ours(x), reference(x))


def test_conversion_warns_that_value_padding_is_not_carried():
    with pytest.warns(UserWarning, match="attention_mask"):
        from_reference(ReferenceMultiHead(1, 2, 3, padding_value=0.0))


def test_matches_reference_in_float32_on_benchmark_sized_input():
    torch.manual_seed(0)
    reference = ReferenceMultiHead(-1, 4, 5)
    ours = from_reference(reference)
    x = torch.randn(2, 64, 96)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-6)


def test_gradcheck_with_padding_mask():
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(3, 4, norm_axis=1).double()
    mask = torch.tensor([[1] * 9, [0] * 3 + [1] * 6, [1] * 7 + [0] * 2])
    x = torch.randn(3, 9, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, o, c: _functional(layer, x, o, c, mask), (x, layer.mean_offsets, layer.c))


def _functional(layer, x, mean_offsets, c, mask):
    return torch.func.functional_call(layer, {"mean_offsets": mean_offsets, "c": c}, (x,), {"attention_mask": mask})


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_and_batch_mates_do_not_change_a_sequence(axis, side):
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(3, 5, norm_axis=axis).double()
    alone = torch.randn(1, 7, 6, dtype=torch.float64)
    expected = layer(alone)
    padding = 1e3 * torch.randn(1, 5, 6, dtype=torch.float64)  # extreme padded values must not leak in
    batch_mate = torch.randn(1, 12, 6, dtype=torch.float64)
    padded = torch.cat([padding, alone], 1) if side == "left" else torch.cat([alone, padding], 1)
    batch = torch.cat([padded, batch_mate])
    real = torch.cat([torch.zeros(5), torch.ones(7)]) if side == "left" else torch.cat([torch.ones(7), torch.zeros(5)])
    mask = torch.stack([real, torch.ones(12)])
    output, weights = layer(batch, attention_mask=mask, return_weights=True)
    positions = real.bool()
    torch.testing.assert_close(output[0, positions], expected[0])
    torch.testing.assert_close(output[0, ~positions], batch[0, ~positions])  # padding passes through unchanged
    assert torch.all(weights[0, ~positions] == 0)
    torch.testing.assert_close(output[1:], layer(batch_mate))


def test_weights_are_a_distribution_per_head():
    layer = GaussianAdaptiveAttention(4, 3, norm_axis=-1).double()
    torch.nn.init.ones_(layer.c)  # unit widths: the eps floor is far from active
    _, weights = layer(torch.randn(2, 5, 16, dtype=torch.float64), return_weights=True)
    torch.testing.assert_close(weights.view(2, 5, 4, 4).sum(-1), torch.ones(2, 5, 4, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_heads": 0, "num_gaussians": 2, "norm_axis": 1}, "num_heads"),
        ({"num_heads": 2, "num_gaussians": -1, "norm_axis": 1}, "num_gaussians"),
        ({"num_heads": 2.0, "num_gaussians": 2, "norm_axis": 1}, "num_heads"),
        ({"num_heads": 2, "num_gaussians": 2, "norm_axis": "sequence"}, "norm_axis"),
        ({"num_heads": 2, "num_gaussians": 2, "norm_axis": 1, "eps": 0}, "eps"),
    ],
)
def test_bad_construction_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianAdaptiveAttention(**kwargs)


def test_bad_forward_inputs_are_named():
    layer = GaussianAdaptiveAttention(4, 2, norm_axis=3)
    with pytest.raises(ValueError, match="norm_axis.*out of range"):
        layer(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="num_heads.*at least 2"):
        GaussianAdaptiveAttention(4, 2, norm_axis=-1)(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="attention_mask.*shape"):
        GaussianAdaptiveAttention(2, 2, norm_axis=1)(torch.randn(2, 8, 4), attention_mask=torch.ones(2, 7))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_stay_finite_and_close(dtype):
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(4, 5, norm_axis=-1)
    x = torch.randn(2, 8, 64)
    output = layer(x.to(dtype))
    assert output.dtype == dtype and torch.isfinite(output).all()
    torch.testing.assert_close(output.float(), layer(x.to(dtype).float()), rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize(
    "x,mask",
    [
        (torch.full((2, 8, 6), 3.0), None),  # zero variance
        (torch.randn(2, 8, 6) * 1e4, None),  # huge values
        (torch.randn(2, 8, 6), torch.tensor([[0] * 8, [1] * 8])),  # an all-padding row
        (torch.randn(2, 8, 6), torch.tensor([[1] + [0] * 7, [0] * 7 + [1]])),  # one real position
    ],
)
def test_edge_inputs_give_finite_outputs_and_gradients(x, mask):
    layer = GaussianAdaptiveAttention(2, 3, norm_axis=1)
    x = x.clone().requires_grad_(True)
    output = layer(x, attention_mask=mask)
    output.square().sum().backward()
    assert torch.isfinite(output).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.c.grad).all()


# Scale-preserving normalisations, against an independent float64 implementation written from their definitions.


def _log_density_oracle(part, axis, mean_offsets, c, eps):
    """One head's log product of Gaussian densities along `axis` (the reference's loop, in log space so that a
    narrow head does not underflow to 0 / 0), and its value at its peak."""
    mean, var = part.mean(axis, keepdim=True), part.var(axis, keepdim=True) + eps

    def log_density(values):
        total = 0.0
        for offset, width in zip(mean_offsets, c):
            y = (values - mean - offset) / var.sqrt()
            total = total - y**2 / (2 * width**2) - 0.5 * torch.log(2 * torch.pi * width**2)
        return total

    # Where the product of Gaussians peaks: the precision-weighted mean of the Gaussians' centres.
    precision = c.pow(-2)
    peak_position = mean + (precision * mean_offsets).sum() / precision.sum()
    return log_density(part), log_density(peak_position)


def _oracle(x, axis, mean_offsets, c, normalization, eps=1e-8):
    """GAAM in float64 by its definition, per head, for inputs without padding."""
    num_heads = mean_offsets.shape[0]
    size = x.shape[axis]
    chunk = size // num_heads
    outputs = []
    for head in range(num_heads):
        end = size if head == num_heads - 1 else (head + 1) * chunk
        part = x.narrow(axis, head * chunk, end - head * chunk)
        log_density, log_peak = _log_density_oracle(part, axis, mean_offsets[head], c[head], eps)
        if normalization == "sum":
            density = log_density.exp()
            weights = density / density.sum(axis, keepdim=True).clamp(min=eps)
        elif normalization == "mean":
            weights = torch.softmax(log_density, axis) * part.shape[axis]
        else:
            weights = (log_density - log_peak).exp()
        outputs.append(part * weights)
    return torch.cat(outputs, axis)


def _layer(axis, num_heads, num_gaussians, normalization, seed=0):
    torch.manual_seed(seed)
    layer = GaussianAdaptiveAttention(num_heads, num_gaussians, norm_axis=axis, normalization=normalization).double()
    with torch.no_grad():
        # Widths and offsets where the oracle's product of densities stays far from underflow.
        layer.c.uniform_(0.6, 2.0).mul_(torch.randint(0, 2, layer.c.shape) * 2 - 1)
        layer.mean_offsets.normal_().mul_(0.5)
    return layer


def _assert_matches_oracle(layer, x, mask=None):
    """Outputs and gradients (input, offsets, widths) of `layer` equal the oracle's, row by row on the real part."""
    x_ours = x.clone().requires_grad_(True)
    actual = layer(x_ours, attention_mask=mask)
    upstream = torch.randn_like(actual)
    grads_ours = torch.autograd.grad((actual * upstream).sum(), [x_ours, layer.mean_offsets, layer.c])
    offsets = layer.mean_offsets.detach().clone().requires_grad_(True)
    c = layer.c.detach().clone().requires_grad_(True)
    x_oracle = x.clone().requires_grad_(True)
    rows = range(x.shape[0]) if mask is not None else [slice(None)]
    loss = 0.0
    for row in rows:
        real = mask[row].bool() if mask is not None else slice(None)
        expected = _oracle(x_oracle[row][real], layer.norm_axis - (mask is not None), offsets, c, layer.normalization)
        torch.testing.assert_close(actual[row][real], expected, rtol=1e-9, atol=1e-12)
        loss = loss + (expected * upstream[row][real]).sum()
        if mask is not None:  # padding passes through
            loss = loss + (x_oracle[row][~real] * upstream[row][~real]).sum()
    grads_oracle = torch.autograd.grad(loss, [x_oracle, offsets, c])
    for ours, expected in zip(grads_ours, grads_oracle):
        torch.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
@pytest.mark.parametrize("shape,axis,num_heads,num_gaussians", _sweep_cases(12, seed=1))
def test_each_normalization_equals_its_float64_definition(normalization, shape, axis, num_heads, num_gaussians):
    layer = _layer(axis, num_heads, min(num_gaussians, 6), normalization)
    _assert_matches_oracle(layer, torch.randn(shape, dtype=torch.float64) * 2 + 1)


@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
def test_each_normalization_with_padding_equals_its_definition_on_the_real_positions(normalization):
    layer = _layer(1, 2, 3, normalization)
    x = torch.randn(3, 11, 4, dtype=torch.float64) + 1e3 * torch.tensor([0.0, 1.0, 1.0]).view(3, 1, 1)
    mask = torch.tensor([[1] * 11, [0] * 4 + [1] * 7, [1] * 6 + [0] * 5])
    x[1, :4] = -5e3  # extreme padding values must change nothing
    _assert_matches_oracle(layer, x, mask)


@pytest.mark.parametrize("normalization", ["mean", "none"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("side", ["left", "right"])
def test_scale_preserving_normalizations_are_padding_invariant(normalization, axis, side):
    layer = _layer(axis, 3, 4, normalization)
    alone = torch.randn(1, 7, 6, dtype=torch.float64)
    padding = 1e3 * torch.randn(1, 4, 6, dtype=torch.float64)
    padded = torch.cat([padding, alone], 1) if side == "left" else torch.cat([alone, padding], 1)
    real = torch.arange(11) >= 4 if side == "left" else torch.arange(11) < 7
    output = layer(torch.cat([padded, torch.randn(1, 11, 6, dtype=torch.float64)]), attention_mask=torch.stack(
        [real.long(), torch.ones(11, dtype=torch.long)]))
    torch.testing.assert_close(output[0, real], layer(alone)[0])
    torch.testing.assert_close(output[0, ~real], padded[0, ~real])


def test_mean_weights_average_one_and_none_weights_are_a_gate_peaking_at_one():
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    mask = torch.tensor([[1] * 9, [0] * 2 + [1] * 7])
    _, weights = _layer(1, 2, 3, "mean")(x, attention_mask=mask, return_weights=True)
    # Row 1 has 7 real positions: heads of 3 and 4.
    torch.testing.assert_close(weights[0, :4].mean(0), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(weights[1, 2:5].mean(0), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(weights[1, 5:].mean(0), torch.ones(16, dtype=torch.float64))
    layer = _layer(-1, 1, 3, "none")
    _, gate = layer(x, return_weights=True)
    assert (gate > 0).all() and (gate <= 1).all()
    with torch.no_grad():
        layer.mean_offsets.zero_()  # the density then peaks at the mean: the middle of a symmetric row
    _, gate = layer(torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0]], dtype=torch.float64), return_weights=True)
    assert gate[0, 2] == 1 and (gate[0, [0, 1, 3, 4]] < 1).all()


@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
@pytest.mark.parametrize("axis", [1, -1])
def test_an_all_padding_row_passes_through_unchanged(normalization, axis):
    layer = _layer(axis, 2, 3, normalization).float()
    x = torch.randn(2, 8, 6, requires_grad=True)
    output, weights = layer(x, attention_mask=torch.tensor([[0] * 8, [1] * 8]), return_weights=True)
    output.square().sum().backward()
    assert torch.equal(output[0], x[0]) and torch.all(weights[0] == 0)
    assert torch.isfinite(output).all() and torch.isfinite(x.grad).all() and torch.isfinite(layer.c.grad).all()
    assert torch.isfinite(layer.mean_offsets.grad).all()


@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_each_normalization_is_stable_under_low_precision_autocast(normalization, dtype):
    layer = _layer(1, 4, 5, normalization).float()
    x = torch.randn(2, 64, 32) * 3
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        from_float = layer(x)
        from_low = layer(x.to(dtype).requires_grad_(True))
        (from_float.sum() + from_low.float().sum()).backward()
    assert from_float.dtype == torch.float32 and from_low.dtype == dtype
    torch.testing.assert_close(from_float, expected)
    torch.testing.assert_close(from_low.float(), layer(x.to(dtype).float()), rtol=2e-2, atol=1e-2)
    assert torch.isfinite(layer.c.grad).all() and torch.isfinite(layer.mean_offsets.grad).all()


def test_normalization_is_in_the_repr_and_a_converted_reference_keeps_sum():
    assert "normalization='mean'" in repr(GaussianAdaptiveAttention(2, 3, 1, normalization="mean"))
    assert from_reference(ReferenceMultiHead(1, 2, 3)).normalization == "sum"


@pytest.mark.parametrize("value", ["softmax", "Sum", None, 1])
def test_unknown_normalization_names_the_argument_the_value_and_the_accepted_values(value):
    with pytest.raises(ValueError, match=r"`normalization` must be one of 'sum', 'mean', 'none', got " + repr(value)):
        GaussianAdaptiveAttention(2, 3, 1, normalization=value)
