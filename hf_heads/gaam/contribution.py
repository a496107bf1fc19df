"""How much a model's GAAM layers contribute: the size of each GAAM branch next to the stream it is added to, and
what the evaluation loss does when every GAAM branch is removed.

A GAAM layer that is configured but contributes nothing is a bug that gradients alone do not reveal (a branch of
0.03% of the residual stream still receives gradients). Each GAAM layer adds a branch to a stream:

- a `gaam_gpt2` block in "augment" mode adds `gate * GAAM(h)` to `h`, the stream after self-attention;
- a `gaam_gpt2` block in "replace" mode adds `GAAM(ln_1(h))` to `h`, the block's input;
- the `headed` "gaam_layers" head adds `GAAM(states)` to the per-layer pooled `states`.

The ratio reported is `||branch|| / ||stream||` (Frobenius norms over every real token of every batch; for the
`headed` head, over every example and layer). "Removed" means every GAAM output is replaced by zeros, which in each
case above leaves exactly the model without its GAAM branch.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .layer import GaussianAdaptiveAttention


@dataclass
class GaamContribution:
    """What `gaam_contribution` measured; `str()` and `to_markdown()` give a table for logs and model cards."""

    names: list[str]  # module name of each GAAM layer
    branch_ratios: list[float]  # per layer: ||GAAM branch|| / ||stream it is added to||, real tokens only
    eval_loss: float  # mean evaluation loss of the model as it is
    eval_loss_without_gaam: float  # the same with every GAAM branch removed
    num_examples: int

    @property
    def loss_change(self) -> float:
        """Evaluation loss without GAAM minus with it: positive when GAAM helps."""
        return self.eval_loss_without_gaam - self.eval_loss

    def to_markdown(self) -> str:
        rows = "\n".join(f"| `{name}` | {_percent(ratio)} |" for name, ratio in zip(self.names, self.branch_ratios))
        return (
            "| GAAM layer | GAAM branch / residual stream (norm) |\n|---|---|\n"
            f"{rows}\n\n"
            f"Evaluation loss on {self.num_examples} held-out examples: {self.eval_loss:.4f} with GAAM, "
            f"{self.eval_loss_without_gaam:.4f} with GAAM removed ({self.loss_change:+.4f}).\n"
        )

    def __str__(self) -> str:
        ratios = ", ".join(f"{name} {_percent(ratio)}" for name, ratio in zip(self.names, self.branch_ratios))
        return (
            f"GAAM branch / residual norm: {ratios}; eval loss {self.eval_loss:.4f} with GAAM, "
            f"{self.eval_loss_without_gaam:.4f} without ({self.loss_change:+.4f})"
        )


def _percent(ratio: float) -> str:
    # A layer that never ran on these batches (a frozen backbone's, under cached features) has no ratio.
    return f"{ratio:.1%}" if math.isfinite(ratio) else "did not run"


def _gaam_layers(model: nn.Module) -> dict[str, tuple[nn.Module, GaussianAdaptiveAttention]]:
    """Every GAAM layer of `model` by name, with the module holding it (which decides what its branch is)."""
    layers = {}
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, GaussianAdaptiveAttention):
                layers[f"{parent_name}.{child_name}" if parent_name else child_name] = (parent, child)
    if not layers:
        raise ValueError(f"`model` ({type(model).__name__}) has no GAAM layer to measure.")
    return layers


@contextmanager
def gaam_removed(model: nn.Module):
    """Inside the `with` statement every GAAM layer of `model` outputs zeros: the model without its GAAM branches."""
    hooks = [
        gaam.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
        for _, gaam in _gaam_layers(model).values()
    ]
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()


class _BranchNorms:
    """Accumulates one GAAM layer's squared branch and stream norms over the real tokens it sees."""

    def __init__(self, holder: nn.Module):
        self.holder = holder
        # A "replace" block adds GAAM(ln_1(h)) to the block's input h, not to GAAM's own input.
        self.adds_to_block_input = getattr(holder, "gaam_placement", None) == "replace"
        # Token-level layers (GAAM-GPT2 blocks) see (batch, sequence, hidden) states and the padding mask applies.
        self.per_token = hasattr(holder, "gaam_placement")
        self.token_mask = None
        self.recording = True
        self.block_input = None
        self.branch = 0.0
        self.stream = 0.0

    def capture_block_input(self, module, args, kwargs):
        self.block_input = args[0] if args else kwargs["hidden_states"]

    def __call__(self, module, args, output):
        if not self.recording:
            return
        stream = self.block_input if self.adds_to_block_input else args[0]
        gate = getattr(self.holder, "gaam_gate", None)
        branch = gate(output) if gate is not None else output
        if self.per_token and self.token_mask is not None:
            real = self.token_mask.to(torch.bool)
            branch, stream = branch[real], stream[real]
        self.branch += branch.float().square().sum().item()
        self.stream += stream.float().square().sum().item()

    def ratio(self) -> float:
        return (self.branch / self.stream) ** 0.5 if self.stream > 0 else float("nan")


def _batch_loss(model: nn.Module, batch: dict) -> float:
    loss = model(**batch).loss
    if loss is None:
        raise ValueError("The model returned no loss: each batch of `dataloader` must hold `labels`.")
    return loss.item()


@torch.no_grad()
def gaam_contribution(model: nn.Module, dataloader) -> GaamContribution:
    """
    Measures, on held-out batches, how much each GAAM layer of `model` contributes.

    Args:
        model: a `gaam_gpt2` model (either placement) or a `headed` model with the "gaam_layers" head.
        dataloader: an iterable of batches (dicts of model inputs with `labels`, e.g. a `DataLoader` with the
            collator used in training); padding is left out through each batch's `attention_mask`.

    Returns:
        A [`GaamContribution`]: per GAAM layer `||GAAM branch|| / ||stream||` over real tokens, and the evaluation
        loss (mean over batches, weighted by their number of examples) with and without GAAM.
    """
    layers = _gaam_layers(model)
    norms = {name: _BranchNorms(holder) for name, (holder, _) in layers.items()}
    hooks = []
    for accumulator, (holder, gaam) in zip(norms.values(), layers.values()):
        hooks.append(gaam.register_forward_hook(accumulator))
        if accumulator.adds_to_block_input:
            hooks.append(holder.register_forward_pre_hook(accumulator.capture_block_input, with_kwargs=True))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_with, loss_without, examples = 0.0, 0.0, 0
    try:
        for batch in dataloader:
            if "labels" not in batch:
                raise ValueError(
                    f"Each batch of `dataloader` must hold `labels` (the loss is measured); got keys {sorted(batch)}."
                )
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            rows = len(batch["labels"])
            for accumulator in norms.values():
                accumulator.token_mask, accumulator.recording = batch.get("attention_mask"), True
            loss_with += rows * _batch_loss(model, batch)
            for accumulator in norms.values():
                accumulator.recording = False
            with gaam_removed(model):
                loss_without += rows * _batch_loss(model, batch)
            examples += rows
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not examples:
        raise ValueError("`dataloader` is empty; GAAM's contribution is measured over at least one batch.")
    return GaamContribution(
        names=list(layers),
        branch_ratios=[accumulator.ratio() for accumulator in norms.values()],
        eval_loss=loss_with / examples,
        eval_loss_without_gaam=loss_without / examples,
        num_examples=examples,
    )


__all__ = ["GaamContribution", "gaam_contribution", "gaam_removed"]
