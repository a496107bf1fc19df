"""GAAM-GPT2 configuration: GPT-2 with Gaussian Adaptive Attention in its blocks."""

import math

from huggingface_hub.dataclasses import strict
from transformers import GPT2Config


GAAM_PLACEMENTS = ("augment", "replace")
GAAM_NORM_AXES = ("sequence", "features")
GAAM_NORMALIZATIONS = ("mean", "none", "sum")
CLASSIFIER_POOLINGS = ("last", "mean")


# Kept in this file rather than shared: a folder saved for `trust_remote_code=True` carries only this model's files.
def _accepts(name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"`{name}`={value!r} is not supported; accepted values: {', '.join(map(repr, accepted))}.")


@strict
class GaamGPT2Config(GPT2Config):
    r"""
    Configuration of a GAAM-GPT2 model: every field of [`GPT2Config`], plus where and how Gaussian Adaptive Attention
    (GAAM, Ioannides et al., arXiv 2401.11143) sits in the blocks. Any GPT-2 checkpoint loads into the GAAM-GPT2
    classes: GPT-2's weights are kept and only the GAAM parameters are new.

    gaam_placement (`str`, *optional*, defaults to `"augment"`):
        `"augment"`: GAAM is an extra residual branch after self-attention, `h = h + gate * GAAM(h)`, with a
        learnable scalar `gate` (initial value `gaam_gate_init`) that learns how much GAAM to use. `"replace"`:
        GAAM takes the place of dot-product self-attention (`h = h + GAAM(ln_1(h))`); GAAM scales features but
        moves no content between tokens.
    gaam_layers (`list[int]`, *optional*):
        Indices of the blocks that carry GAAM; `None` means every block.
    gaam_num_heads (`int`, *optional*, defaults to 4):
        GAAM heads: the normalised axis is split into this many contiguous chunks.
    gaam_num_gaussians (`int`, *optional*, defaults to 5):
        Gaussians per GAAM head.
    gaam_norm_axis (`str`, *optional*, defaults to `"features"`):
        `"features"`: statistics over each token's hidden features (causal by construction, usable in a causal
        LM). `"sequence"`: statistics over the sequence positions of each feature (sees the future, so refused
        for causal LMs); padding is left out using `attention_mask`.
    gaam_eps (`float`, *optional*, defaults to 1e-8):
        GAAM's variance epsilon and normalisation floor.
    gaam_normalization (`str`, *optional*, defaults to `"mean"`):
        How GAAM scales its Gaussian weights over each head's chunk of the normalised axis. `"mean"`: the weights
        average 1 over the chunk's real positions, so `GAAM(h)` has the scale of `h`. `"none"`: the density itself,
        peak 1, a gate in (0, 1] (as in the GAAM authors' own PEFT head); `GAAM(h)` is about a fifth of `h`.
        `"sum"`: the reference package's weights, summing to 1, so `GAAM(h)` is about `h / n` for a chunk of `n`
        positions: it reproduces the reference, but in "augment" such a branch is inert (measured: 0.0-0.6% of the
        residual stream after training, no effect on the loss when removed). `"mean"` is the default: on a
        character LM its trained "augment" branch is 58-78% of the residual stream and removing it costs +0.022
        nats per character, more than the spread between seeds (0.006); "none" gives ~20% and +0.003
        (`benchmarks/results/gaam_value.md`). A `gaam_gpt2` `config.json` saved before this field existed loads as
        `"sum"`, the behaviour it was trained with (a GPT-2 `config.json` gets the default: its GAAM is new).
    gaam_gate_init (`float`, *optional*, defaults to 1.0):
        Initial value of the `"augment"` gates (`"replace"` has none); only newly created gates take it, a
        checkpoint's own gates are loaded. A closed gate (0) stays closed: the branch `GAAM(h)` starts out mostly
        parallel to `h`, the next layer norm cancels most of it, so the gate's gradient is weak and an Adam step
        moves it by about one learning rate (measured: |gate| <= 0.07 after 100-150 steps, GAAM inert). At 1, a
        model loaded from GPT-2 starts close to it (measured on a small character LM: KL 0.016 nats per character
        at step 0) and GAAM stays a material part of it after training; smaller values start closer but end inert
        (`benchmarks/results/gaam_gate.md`). Use 0 to start exactly as the GPT-2 you load, knowing GAAM then
        contributes only if training opens the gate; `hf_heads.gaam_contribution` shows whether it did.
    classifier_pooling (`str`, *optional*, defaults to `"last"`):
        How [`GaamGPT2ForSequenceClassification`] reads a sequence: `"last"` (GPT-2's rule: the last real token,
        taken from `attention_mask` when given) or `"mean"` (mean over real tokens).
    """

    model_type = "gaam_gpt2"

    gaam_placement: str = "augment"
    gaam_layers: list[int] | None = None
    gaam_num_heads: int = 4
    gaam_num_gaussians: int = 5
    gaam_norm_axis: str = "features"
    gaam_eps: float = 1e-8
    gaam_normalization: str = "mean"
    gaam_gate_init: float = 1.0
    classifier_pooling: str = "last"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Checked here rather than in a `validate_*` hook so users get a plain ValueError naming the field.
        self._check_gaam_fields()

    def _check_gaam_fields(self):
        _accepts("gaam_placement", self.gaam_placement, GAAM_PLACEMENTS)
        _accepts("gaam_norm_axis", self.gaam_norm_axis, GAAM_NORM_AXES)
        _accepts("gaam_normalization", self.gaam_normalization, GAAM_NORMALIZATIONS)
        _accepts("classifier_pooling", self.classifier_pooling, CLASSIFIER_POOLINGS)
        for name in ("gaam_num_heads", "gaam_num_gaussians"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}.")
        if not self.gaam_eps > 0:
            raise ValueError(f"`gaam_eps` must be positive, got {self.gaam_eps!r}.")
        if not math.isfinite(self.gaam_gate_init):
            raise ValueError(f"`gaam_gate_init` must be a finite number, got {self.gaam_gate_init!r}.")
        # Fields checked against the model's sizes (`gaam_layers`, `gaam_num_heads` against `n_layer` and `n_embd`) are
        # checked where a model is built: like `GPT2Config`, a config may hold placeholder sizes until then.

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        if config_dict.get("model_type") == cls.model_type and "gaam_normalization" not in config_dict:
            # Saved before GAAM's normalisation was configurable: the model was trained with the reference's "sum",
            # and its learned gates are only right at that scale. (A GPT-2 config gets the default: its GAAM is new.)
            config_dict = {**config_dict, "gaam_normalization": "sum"}
        return super().from_dict(config_dict, **kwargs)

    @property
    def gaam_block_indices(self) -> list[int]:
        """The blocks that carry GAAM."""
        return list(range(self.n_layer)) if self.gaam_layers is None else sorted(self.gaam_layers)


__all__ = ["GaamGPT2Config"]
