"""Configuration of `headed` models: a task head on top of any `AutoModel` backbone."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_gaam_gpt2 import GaamGPT2Config
from .heads import HEADS


HEAD_TYPES = tuple(HEADS)  # the built-in head types; `hf_heads.register_head` adds more
HEAD_POOLINGS = ("last", "mean", "attention")
GAAM_NORMALIZATIONS = ("sum", "mean", "none")
DAAM_VARIANTS = ("daam", "gqdaam")
# This package's own backbones, whose code a saved folder carries (beside this file) so that it loads without the
# package: `AutoConfig` knows them only where `hf_heads` is imported.
CARRIED_BACKBONE_CONFIGS = {GaamGPT2Config.model_type: GaamGPT2Config}


# Kept in this file rather than shared: a folder saved for `trust_remote_code=True` carries only this model's files.
def _accepts(name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"`{name}`={value!r} is not supported; accepted values: {', '.join(map(repr, accepted))}.")


@strict
class HeadedConfig(PreTrainedConfig):
    r"""
    A task head on top of a backbone given by its own configuration (any `AutoConfig`), stored as a sub-config so
    that `config.json` round-trips.

    backbone_config (`dict` or `PreTrainedConfig`):
        The backbone's configuration (GPT-2, BERT, Llama, ...).
    head_type (`str`, *optional*, defaults to `"mean"`):
        A registered head (see `heads.py`; `hf_heads.register_head` adds your own). Built in: `"mean"` and
        `"last_token"` (a linear classifier on the mean over real tokens / the last real token), `"linear"` (a linear
        layer on every token, token classification), `"attention"` (a self-attention encoder over the last hidden
        states), `"gaam_layers"` (GAAM across every layer's mean-pooled state with a residual, then averaged),
        `"scalar_mix"` (a learned softmax-weighted sum of every layer's mean-pooled state) and `"daam"` (the GAAM
        authors' own head: their density gate across layers, then convolutions).
    head_code (`str`, *optional*):
        Set by `save_pretrained` for a head registered outside this package: `"<file>.<class>"` of the code the saved
        folder carries, loaded with `trust_remote_code=True`.
    head_dropout (`float`, *optional*, defaults to 0.1):
        Dropout before the classifier (and inside the attention head).
    head_num_heads (`int`, *optional*, defaults to 2):
        Attention heads of the `"attention"` head.
    head_num_layers (`int`, *optional*, defaults to 1):
        Self-attention layers of the `"attention"` head.
    head_pooling (`str`, *optional*, defaults to `"mean"`):
        How the `"attention"` head pools tokens for sequence classification: `"last"` real token, `"mean"` over
        real tokens, or `"attention"` (a learned query attends over real tokens).
    gaam_num_heads (`int`, *optional*, defaults to 1):
        GAAM heads of the `"gaam_layers"` head (splitting the layer axis).
    gaam_num_gaussians (`int`, *optional*, defaults to 4):
        Gaussians per GAAM head of the `"gaam_layers"` head.
    gaam_normalization (`str`, *optional*, defaults to `"mean"`):
        How the `"gaam_layers"` head's GAAM normalises its weights (`GaussianAdaptiveAttention(normalization=...)`):
        `"mean"` (weights average 1, so GAAM's branch keeps the states' scale), `"none"` (a gate in (0, 1]) or
        `"sum"` (the reference's: weights sum to 1, so the branch is about 1/layers of the states). Configurations
        saved before this field existed load with `"sum"`, the behaviour they were trained with.
    daam_num_heads (`int`, *optional*):
        Heads of the `"daam"` gate, each over an equal chunk of at least 2 of the backbone's layers. Defaults to the
        largest of 8 (the authors' DAAMv1), 4, 2, 1 that does so.
    daam_grid (`list[int]`, *optional*):
        Rows and columns of the image each layer's features become for the `"daam"` convolutions; defaults to the
        factorisation of the feature count closest to a square (the authors use 32 x 32 for 1,024 features).
    daam_conv_channels (`int`, *optional*, defaults to 512):
        Channels between the `"daam"` head's two convolutions (the authors' 512).
    daam_variant (`str`, *optional*, defaults to `"daam"`):
        `"daam"`, or `"gqdaam"`: the gated states are projected to 512 features and pass grouped-query attention
        (8 query, 2 key/value heads) across layers before the convolutions.
    freeze_backbone (`bool`, *optional*, defaults to `False`):
        Whether the backbone's parameters are frozen (only the head trains).
    """

    model_type = "headed"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2")}

    backbone_config: dict | PreTrainedConfig | None = None
    head_type: str = "mean"
    head_code: str | None = None
    head_dropout: float = 0.1
    head_num_heads: int = 2
    head_num_layers: int = 1
    head_pooling: str = "mean"
    gaam_num_heads: int = 1
    gaam_num_gaussians: int = 4
    gaam_normalization: str = "mean"
    daam_num_heads: int | None = None
    daam_grid: list[int] | None = None
    daam_conv_channels: int = 512
    daam_variant: str = "daam"
    freeze_backbone: bool = False

    def __post_init__(self, **kwargs):
        backbone = self.backbone_config
        if isinstance(backbone, dict) and backbone.get("model_type") in CARRIED_BACKBONE_CONFIGS:
            # Resolved here, not by `AutoConfig`, which knows this package's backbones only where it is imported.
            backbone = dict(backbone)
            self.backbone_config = CARRIED_BACKBONE_CONFIGS[backbone.pop("model_type")](**backbone)
        super().__post_init__(**kwargs)
        # Checked here rather than in a `validate_*` hook so users get a plain ValueError naming the field.
        if self.head_type not in HEADS and self.head_code is None:
            accepted = ", ".join(map(repr, sorted(HEADS)))
            raise ValueError(
                f"`head_type`={self.head_type!r} is not supported; accepted values: {accepted} "
                "(`hf_heads.register_head` adds your own)."
            )
        _accepts("head_pooling", self.head_pooling, HEAD_POOLINGS)
        _accepts("gaam_normalization", self.gaam_normalization, GAAM_NORMALIZATIONS)
        _accepts("daam_variant", self.daam_variant, DAAM_VARIANTS)
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"`head_dropout` must be in [0, 1), got {self.head_dropout!r}.")
        required = ("head_num_heads", "head_num_layers", "gaam_num_heads", "gaam_num_gaussians", "daam_conv_channels")
        for name in required + ("daam_num_heads",):
            value = getattr(self, name)
            if value is None and name not in required:
                continue  # a default derived from the backbone
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.num_labels < 1:
            raise ValueError(f"`num_labels` must be at least 1, got {self.num_labels!r}.")
        if self.head_type in HEADS:
            HEADS[self.head_type].check(self)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        if "head_type" in config_dict and "gaam_normalization" not in config_dict:
            # Saved before the field existed, when the GAAM op always used the reference's "sum".
            config_dict = {**config_dict, "gaam_normalization": "sum"}
        return super().from_dict(config_dict, **kwargs)


__all__ = ["HeadedConfig"]
