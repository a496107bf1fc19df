"""Conversion from the reference package `gaussian-adaptive-attention` to `GaussianAdaptiveAttention`."""

import warnings

import torch

from .layer import GaussianAdaptiveAttention


def from_reference(module) -> GaussianAdaptiveAttention:
    """
    Convert a reference `MultiHeadGaussianAdaptiveAttention` or single-head `GaussianAdaptiveAttention` (from the
    PyPI package `gaussian-adaptive-attention`) into a `hf_heads.GaussianAdaptiveAttention` with the same outputs.

    The reference detects padding by comparing values with `padding_value`; that is not carried over (pass an
    `attention_mask` to the converted module instead), and a warning says so.
    """
    if hasattr(module, "attention_heads"):
        heads = list(module.attention_heads)
    elif hasattr(module, "mean_offsets") and hasattr(module, "c") and hasattr(module, "num_gaussians"):
        heads = [module]
    else:
        raise TypeError(
            f"`module` must be a reference `MultiHeadGaussianAdaptiveAttention` or `GaussianAdaptiveAttention`, "
            f"got {type(module).__name__}."
        )
    if heads[0].padding_value is not None:
        warnings.warn(
            f"The reference module detects padding by value (padding_value={heads[0].padding_value!r}); the "
            "converted module ignores it: pass `attention_mask` to its forward instead.",
            stacklevel=2,
        )
    converted = GaussianAdaptiveAttention(
        num_heads=len(heads),
        num_gaussians=heads[0].num_gaussians,
        norm_axis=module.norm_axis,
        eps=heads[0].eps,
    ).to(device=heads[0].c.device, dtype=heads[0].c.dtype)
    with torch.no_grad():
        converted.mean_offsets.copy_(torch.stack([head.mean_offsets.detach() for head in heads]))
        converted.c.copy_(torch.stack([head.c.detach() for head in heads]))
    return converted
