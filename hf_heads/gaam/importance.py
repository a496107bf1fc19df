"""The Importance Factor (IF) of Ioannides et al.: where along its normalised axis each GAAM layer puts its weight.

For every `GaussianAdaptiveAttention` in a model, the normalised Gaussian weights it computes are averaged over the
given inputs (real positions only) and over every axis but the normalised one, then min-max scaled to [0, 1] per
layer. For the `headed` "gaam_layers" head the axis is the backbone's layers (which layers the classifier relies
on); in `gaam_gpt2` it is the features or the sequence positions of each block. `per_head` summarises each GAAM
head's chunk of the axis by its mean IF (approximate on a padded sequence axis, where heads split each row's own
length).
"""

from dataclasses import dataclass

import torch
from torch import nn

from .layer import GaussianAdaptiveAttention


@dataclass
class ImportanceFactors:
    names: list[str]  # module name of each GAAM layer
    factors: list[torch.Tensor]  # per layer: IF along its normalised axis, in [0, 1]
    per_head: list[torch.Tensor]  # per layer: mean IF of each GAAM head's chunk

    def as_dict(self) -> dict[str, list[float]]:
        return {name: factor.tolist() for name, factor in zip(self.names, self.factors)}


class _WeightAverager:
    """Accumulates one GAAM layer's weights along its normalised axis over the batches it sees."""

    def __init__(self, module: GaussianAdaptiveAttention):
        self.module = module
        self.total = None
        self.count = None

    def __call__(self, module, args, kwargs, output):
        x = args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        with torch.no_grad():
            # `forward`, not `module(...)`: calling the module would run this hook again.
            _, weights = module.forward(x, attention_mask=mask, return_weights=True)
            axis = module.norm_axis % x.dim()
            valid = torch.ones_like(weights) if mask is None else module._valid_positions(x, mask).expand_as(weights)
            other = [d for d in range(x.dim()) if d != axis]
            total = weights.float().sum(other).cpu()
            count = valid.float().sum(other).cpu()
        self._add(total, count)

    def _add(self, total: torch.Tensor, count: torch.Tensor) -> None:
        if self.total is None:
            self.total, self.count = total, count
            return
        # Sequence axes vary in length from batch to batch: grow to the longest seen.
        size = max(self.total.shape[0], total.shape[0])
        self.total = nn.functional.pad(self.total, (0, size - self.total.shape[0])) + nn.functional.pad(
            total, (0, size - total.shape[0])
        )
        self.count = nn.functional.pad(self.count, (0, size - self.count.shape[0])) + nn.functional.pad(
            count, (0, size - count.shape[0])
        )

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count.clamp(min=1)
        span = mean.max() - mean.min()
        factor = (mean - mean.min()) / span if span > 0 else torch.zeros_like(mean)
        heads = self.module.num_heads
        chunk = factor.shape[0] // heads
        bounds = [(h * chunk, (h + 1) * chunk if h < heads - 1 else factor.shape[0]) for h in range(heads)]
        return factor, torch.stack([factor[start:end].mean() for start, end in bounds])


@torch.no_grad()
def importance_factors(model: nn.Module, batches) -> ImportanceFactors:
    """
    Runs `model` in eval mode on each batch of `batches` (dicts of model inputs, e.g. a `DataLoader`) and returns the
    Importance Factor of every GAAM layer in it.
    """
    averagers = {
        name: _WeightAverager(module)
        for name, module in model.named_modules()
        # Modules declaring `reports_importance` (the `headed` "daam" head's gate) report their gate the same way.
        if isinstance(module, GaussianAdaptiveAttention) or getattr(module, "reports_importance", False)
    }
    if not averagers:
        raise ValueError(f"`model` ({type(model).__name__}) has no GAAM layer; the Importance Factor needs one.")
    hooks = [averager.module.register_forward_hook(averager, with_kwargs=True) for averager in averagers.values()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            model(**{key: value.to(model.device) for key, value in batch.items() if key not in ("labels", "label")})
            seen += 1
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not seen:
        raise ValueError("`batches` is empty; the Importance Factor averages over at least one batch.")
    # GAAM layers that did not run (a backbone's, when a head reads cached features) have no factor.
    ran = {name: averager for name, averager in averagers.items() if averager.total is not None}
    results = [averager.result() for averager in ran.values()]
    return ImportanceFactors(list(ran), [factor for factor, _ in results], [heads for _, heads in results])


def plot_importance(factors: ImportanceFactors, path, title: str = "GAAM Importance Factor", axis_label: str = "position along the normalised axis"):
    """Draws the factors as a heatmap (one row per GAAM layer) and saves it as a PNG at `path`: the recipes' own
    heatmap (`hf_heads.hub.plot_importance_heatmap`), so users get the same readable figure."""
    from ..hub.plots import plot_importance_heatmap

    return plot_importance_heatmap(factors, path, axis_name=axis_label, title=title)


__all__ = ["ImportanceFactors", "importance_factors", "plot_importance"]
