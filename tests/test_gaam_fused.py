"""The fused CPU kernel of `GaussianAdaptiveAttention` against the exact PyTorch path, and every fallback to that path.

The float64 oracle tests (test_gaam_layer.py, test_numerics.py) run through the kernel wherever it is available; these
tests pin what the kernel serves, that it equals the exact path there, and that everything else falls back to it.
"""

import shutil
import warnings

import pytest
import torch

import hf_heads.gaam.layer as gaam_layer
from hf_heads import GaussianAdaptiveAttention


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the fused kernel's forward calls (a test that a path ran, not only that results agree)."""
    calls = []
    apply = gaam_layer._FusedGaussianAttention.apply

    def counting_apply(*args):
        calls.append(args[0].shape)
        return apply(*args)

    monkeypatch.setattr(gaam_layer._FusedGaussianAttention, "apply", counting_apply)
    return calls


@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
    """A forgotten kernel and an empty build cache, restored afterwards."""
    monkeypatch.setattr(gaam_layer, "_kernel", None)
    monkeypatch.setenv("HF_HEADS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _kernel_or_skip():
    if gaam_layer._fused_kernel() is None:
        pytest.skip("no C++ compiler with OpenMP here: the fused kernel is unavailable (the exact path is tested)")


def _run(layer, x, mask, upstream):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    output = layer(x, attention_mask=mask)
    (output.float() * upstream).sum().backward()
    return output, x.grad, layer.mean_offsets.grad, layer.c.grad


def _exact(monkeypatch, layer, x, mask, upstream):
    with monkeypatch.context() as patch:
        patch.setattr(gaam_layer, "_kernel", False)
        return _run(layer, x, mask, upstream)


def _padding(batch, length, pattern):
    mask = torch.ones(batch, length, dtype=torch.long)
    if pattern == "left and right, one empty row, one short row":
        mask[0, :3] = 0
        mask[1, -4:] = 0
        mask[2] = 0
        mask[3, 2:] = 0  # 2 real positions: fewer than the heads
    return mask


# (shape, norm_axis, num_heads, mask pattern): every layout the kernel serves.
LAYOUTS = {
    "features": ((4, 10, 24), -1, 4, None),
    "features, last head takes the rest": ((3, 5, 23), -1, 4, None),
    # Heads of 33, 33 and 34 elements: whole vector registers (8 or 16 lanes) and a remainder.
    "features, heads wider than a vector register": ((3, 4, 100), -1, 3, None),
    "features, padded rows": ((4, 10, 24), -1, 3, "left and right, one empty row, one short row"),
    "sequence": ((4, 12, 70), 1, 3, None),  # 70 columns: a full tile of 64 and a partial one
    "sequence, padded": ((4, 12, 70), 1, 3, "left and right, one empty row, one short row"),
    "sequence of scalars, padded": ((4, 12), 1, 3, "left and right, one empty row, one short row"),
    "axis 2 of 4, padded rows": ((4, 3, 9, 5), 2, 2, "left and right, one empty row, one short row"),
    "first axis": ((9, 2, 3), 0, 2, None),
}


@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_kernel_equals_the_exact_path(layout, dtype, normalization, kernel_calls, monkeypatch):
    _kernel_or_skip()
    shape, axis, num_heads, pattern = LAYOUTS[layout]
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(num_heads, 4, axis, normalization=normalization).to(dtype)
    with torch.no_grad():
        layer.mean_offsets.normal_().mul_(0.5)
    x = (torch.randn(shape) * 2 + 1).to(dtype)
    mask = None if pattern is None else _padding(shape[0], shape[1], pattern)
    upstream = torch.randn(shape)
    fused = _run(layer, x, mask, upstream)
    assert len(kernel_calls) == 1
    exact = _exact(monkeypatch, layer, x, mask, upstream)
    assert len(kernel_calls) == 1
    # float64 pins the algorithm; float32 the single-precision build (its exp), within float32 rounding as amplified
    # by a narrow head's gradient.
    tolerance = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for ours, expected in zip(fused, exact):
        torch.testing.assert_close(ours, expected, **tolerance)
    if mask is not None and axis == 1:
        assert torch.equal(fused[0][2], x[2])  # the all-padding row passes through


@pytest.mark.parametrize("layout", [name for name, spec in LAYOUTS.items() if spec[3] is not None])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_non_finite_padding_passes_through_and_leaves_every_gradient_finite(layout, value, monkeypatch):
    """Padding is left out of the weights on both paths: whatever it holds (a NaN, an inf, a value whose square
    overflows float32) comes out unchanged, and no gradient turns NaN through a 0 * value in the backward."""
    _kernel_or_skip()
    shape, axis, num_heads, pattern = LAYOUTS[layout]
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(num_heads, 4, axis)
    mask = _padding(shape[0], shape[1], pattern)
    x = torch.randn(shape)
    padded = ~mask.bool().reshape(mask.shape + (1,) * (len(shape) - 2)).expand(shape)
    x[padded] = value
    upstream = torch.randn(shape)
    for result in (_run(layer, x, mask, upstream), _exact(monkeypatch, layer, x, mask, upstream)):
        output, grad_x, grad_offsets, grad_c = result
        torch.testing.assert_close(output[padded], x[padded], rtol=0, atol=0, equal_nan=True)
        assert torch.isfinite(output[~padded]).all()
        assert torch.equal(grad_x[padded], upstream[padded])
        assert all(torch.isfinite(grad).all() for grad in (grad_x, grad_offsets, grad_c))


def test_the_hand_derived_backward_of_the_head_parameters_equals_autograd():
    torch.manual_seed(0)
    c = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    offsets = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    upstream = [torch.randn(3, dtype=torch.float64) for _ in range(4)]
    expected = torch.autograd.grad(gaam_layer.head_parameters(c, offsets), (c, offsets), upstream)
    ours = gaam_layer.head_parameters_backward(c.detach(), offsets.detach(), *upstream)
    for mine, reference in zip(ours, expected):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 1])
def test_narrow_gaussians_whose_tails_are_subnormal_agree_with_the_exact_path(axis, kernel_calls, monkeypatch):
    """The kernel flushes subnormal floats (below 1.2e-38) to 0 while it runs: results agree at each tensor's scale."""
    _kernel_or_skip()
    layer = GaussianAdaptiveAttention(4, 3, axis, normalization="sum")
    with torch.no_grad():
        layer.c.fill_(0.05)  # total precision 1200 per head: most weights far below 1e-30
    x = torch.randn(2, 64, 32)
    upstream = torch.randn(2, 64, 32)
    fused = _run(layer, x, None, upstream)
    exact = _exact(monkeypatch, layer, x, None, upstream)
    assert len(kernel_calls) == 1
    _, weights = layer(x, return_weights=True)
    assert ((weights > 0) & (weights < torch.finfo(torch.float32).tiny)).any()  # the exact path has subnormals
    # Both paths lose the tail's smallest values (the kernel's float exp ends at exp(-87), where PyTorch's goes on to
    # exp(-103) in subnormals), so differences are absolute, far below each tensor's scale.
    for ours, expected in zip(fused, exact):
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("axis", [-1, 1])
def test_the_float64_kernel_keeps_subnormal_values(axis, kernel_calls, monkeypatch):
    """Only the float32 kernel flushes subnormals: float64 inputs of ~1e-310 come out as the exact path gives them."""
    _kernel_or_skip()
    layer = GaussianAdaptiveAttention(2, 3, axis, normalization="mean").double()
    x = torch.randn(2, 40, 6, dtype=torch.float64) * 1e-310
    upstream = torch.randn(2, 40, 6, dtype=torch.float64)
    fused = _run(layer, x, None, upstream)
    exact = _exact(monkeypatch, layer, x, None, upstream)
    assert len(kernel_calls) == 1 and (fused[0] != 0).any()
    for ours, expected in zip(fused, exact):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=0)


def test_the_kernel_leaves_the_callers_floating_point_settings_as_it_found_them(kernel_calls):
    _kernel_or_skip()
    for shape in [(2, 8, 6), (8, 64, 256)]:  # one thread, then a thread team
        x = torch.randn(shape, requires_grad=True)
        GaussianAdaptiveAttention(2, 3, 1)(x).sum().backward()
    assert len(kernel_calls) == 2
    subnormal = torch.tensor([1e-39])
    assert (subnormal * 2).item() == pytest.approx(2e-39, rel=1e-3)  # not flushed to 0 after the kernel ran


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_served_in_float32(dtype, kernel_calls, monkeypatch):
    _kernel_or_skip()
    layer = GaussianAdaptiveAttention(4, 5, 1, normalization="mean")
    x = torch.randn(2, 16, 8).to(dtype)
    upstream = torch.randn(2, 16, 8)
    fused = _run(layer, x, None, upstream)
    assert kernel_calls and fused[0].dtype == dtype
    exact = _exact(monkeypatch, layer, x, None, upstream)
    for ours, expected in zip(fused[:2], exact[:2]):  # in the input's dtype, at its tolerance
        torch.testing.assert_close(ours, expected)
    for ours, expected in zip(fused[2:], exact[2:]):
        # float32 sums over every element, in another order: ~1e-5 relative apart.
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_weights_requests_take_the_exact_path_and_agree_with_the_kernel(kernel_calls):
    _kernel_or_skip()
    layer = GaussianAdaptiveAttention(2, 3, 1)
    x = torch.randn(2, 8, 6)
    fused = layer(x)
    output, weights = layer(x, return_weights=True)
    assert len(kernel_calls) == 1
    torch.testing.assert_close(output, fused)
    torch.testing.assert_close(output, x * weights)


def test_a_mask_along_the_first_axis_takes_the_exact_path(kernel_calls):
    layer = GaussianAdaptiveAttention(2, 3, 0)
    output = layer(torch.randn(6, 5, 2), attention_mask=torch.ones(6, 5))
    assert not kernel_calls and torch.isfinite(output).all()


def test_an_axis_longer_than_the_kernels_scratch_takes_the_exact_path(kernel_calls, monkeypatch):
    _kernel_or_skip()
    monkeypatch.setattr(gaam_layer, "_MAX_LENGTH", 16)
    layer = GaussianAdaptiveAttention(2, 3, 1)
    layer(torch.randn(2, 16, 3))
    assert len(kernel_calls) == 1
    output = layer(torch.randn(2, 17, 3))
    assert len(kernel_calls) == 1 and torch.isfinite(output).all()


def test_other_devices_take_the_exact_path(kernel_calls):
    layer = GaussianAdaptiveAttention(2, 3, -1).to("meta")
    output = layer(torch.empty(2, 5, 8, device="meta"))
    assert not kernel_calls and output.shape == (2, 5, 8) and output.device.type == "meta"


def test_torch_compile_traces_the_exact_path():
    layer = GaussianAdaptiveAttention(2, 3, -1, normalization="none")
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(torch.compile(layer, backend="eager", fullgraph=False)(x), layer(x))


def test_without_a_compiler_the_exact_path_serves_with_one_warning(fresh_kernel_state, kernel_calls, monkeypatch):
    monkeypatch.setenv("CXX", str(fresh_kernel_state / "no-such-compiler"))
    layer = GaussianAdaptiveAttention(2, 3, 1, normalization="mean").double()
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="fused CPU kernel is unavailable.*exact PyTorch path"):
        output = layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        torch.testing.assert_close(layer(x), output)
    assert not kernel_calls
    torch.testing.assert_close(output, _exact(monkeypatch, layer, x, None, torch.ones(2, 8, 4))[0])


def test_a_kernel_that_does_not_compile_falls_back_with_the_compilers_message(fresh_kernel_state, kernel_calls,
                                                                              monkeypatch):
    broken = fresh_kernel_state.parent / "gaam_kernel.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(gaam_layer, "_KERNEL_SOURCE", broken)
    layer = GaussianAdaptiveAttention(2, 3, -1)
    with pytest.warns(UserWarning, match="unavailable.*error"):
        output = layer(torch.randn(2, 3, 8))
    assert not kernel_calls and torch.isfinite(output).all()


def test_the_switch_off_variable_skips_the_build(fresh_kernel_state, kernel_calls, monkeypatch):
    monkeypatch.setenv("HF_HEADS_GAAM_KERNEL", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianAdaptiveAttention(2, 3, -1)(torch.randn(2, 3, 8))
    assert not kernel_calls and not fresh_kernel_state.exists()


def test_the_kernel_is_built_once_into_the_cache(fresh_kernel_state):
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler here")
    assert gaam_layer._fused_kernel() is not None
    built = list(fresh_kernel_state.glob("kernels/gaam_kernel-*.so"))
    assert len(built) == 1 and not list(fresh_kernel_state.glob("kernels/tmp*"))
    stamp = built[0].stat().st_mtime_ns
    gaam_layer._kernel = None
    assert gaam_layer._fused_kernel() is not None and built[0].stat().st_mtime_ns == stamp


def test_a_saved_folder_without_the_kernel_source_runs_the_exact_path(run_without_hf_heads, tmp_path, kernel_calls):
    """A `trust_remote_code` folder carries `gaam_layer.py` alone: it must load and compute the same, with no build."""
    folder = tmp_path / "saved"
    folder.mkdir()
    shutil.copy(gaam_layer.__file__, folder / "gaam_layer.py")
    torch.manual_seed(0)
    layer = GaussianAdaptiveAttention(3, 4, 1, normalization="mean")
    x = torch.randn(4, 12, 5)
    mask = _padding(4, 12, "left and right, one empty row, one short row")
    torch.save({"state": layer.state_dict(), "x": x, "mask": mask}, tmp_path / "inputs.pt")
    printed = run_without_hf_heads(
        f"""
        import os, sys, warnings
        import torch
        os.environ["HF_HEADS_CACHE"] = {str(tmp_path / "cache")!r}
        sys.path.insert(0, {str(folder)!r})
        warnings.simplefilter("error")
        from gaam_layer import GaussianAdaptiveAttention
        saved = torch.load({str(tmp_path / "inputs.pt")!r})
        layer = GaussianAdaptiveAttention(3, 4, 1, normalization="mean")
        layer.load_state_dict(saved["state"])
        x = saved["x"].requires_grad_(True)
        output = layer(x, attention_mask=saved["mask"])
        output.square().sum().backward()
        torch.save({{"output": output, "grad": x.grad}}, {str(tmp_path / "outputs.pt")!r})
        print("cache built:", os.path.exists({str(tmp_path / "cache")!r}))
        """
    )
    assert "cache built: False" in printed
    result = torch.load(tmp_path / "outputs.pt")
    x = x.requires_grad_(True)
    output = layer(x, attention_mask=mask)
    output.square().sum().backward()
    torch.testing.assert_close(result["output"], output, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(result["grad"], x.grad, rtol=2e-5, atol=2e-5)
    if gaam_layer._fused_kernel() is not None:
        assert kernel_calls  # this process used the kernel, the saved folder the exact path
