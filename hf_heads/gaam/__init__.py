"""Gaussian Adaptive Attention: the op, conversion from the reference package, and the Importance Factor."""

from .layer import GaussianAdaptiveAttention
from .reference import from_reference


__all__ = ["GaussianAdaptiveAttention", "from_reference"]
