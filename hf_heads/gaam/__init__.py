"""Gaussian Adaptive Attention: the op, conversion from the reference package, and the Importance Factor."""

from .importance import ImportanceFactors, importance_factors, plot_importance
from .layer import GaussianAdaptiveAttention
from .reference import from_reference


__all__ = ["GaussianAdaptiveAttention", "ImportanceFactors", "from_reference", "importance_factors", "plot_importance"]
