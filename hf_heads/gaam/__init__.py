"""Gaussian Adaptive Attention: the op, conversion from the reference package, the Importance Factor, and how much
a model's GAAM layers contribute."""

from .contribution import GaamContribution, gaam_contribution, gaam_removed
from .importance import ImportanceFactors, importance_factors, plot_importance
from .layer import GaussianAdaptiveAttention
from .reference import from_reference


__all__ = [
    "GaamContribution",
    "GaussianAdaptiveAttention",
    "ImportanceFactors",
    "from_reference",
    "gaam_contribution",
    "gaam_removed",
    "importance_factors",
    "plot_importance",
]
