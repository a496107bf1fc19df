"""Configuration of `headed` models: a task head on top of any `AutoModel` backbone."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


HEAD_TYPES = ("attention", "gaam_layers", "last_token", "mean")
HEAD_POOLINGS = ("last", "mean", "attention")


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
        `"attention"`: a multi-head self-attention encoder over the backbone's last hidden states, then pooling and
        a linear classifier. `"gaam_layers"`: the GAAM paper's parameter-efficient head: the hidden states of every
        backbone layer are mean-pooled over real tokens, GAAM normalises across the layer axis with a residual, the
        layers are averaged and a linear classifier reads the result. `"last_token"`: a linear classifier on the
        last real token. `"mean"`: a linear classifier on the mean over real tokens.
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
    freeze_backbone (`bool`, *optional*, defaults to `False`):
        Whether the backbone's parameters are frozen (only the head trains).
    """

    model_type = "headed"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2")}

    backbone_config: dict | PreTrainedConfig | None = None
    head_type: str = "mean"
    head_dropout: float = 0.1
    head_num_heads: int = 2
    head_num_layers: int = 1
    head_pooling: str = "mean"
    gaam_num_heads: int = 1
    gaam_num_gaussians: int = 4
    freeze_backbone: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Checked here rather than in a `validate_*` hook so users get a plain ValueError naming the field.
        _accepts("head_type", self.head_type, HEAD_TYPES)
        _accepts("head_pooling", self.head_pooling, HEAD_POOLINGS)
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"`head_dropout` must be in [0, 1), got {self.head_dropout!r}.")
        for name in ("head_num_heads", "head_num_layers", "gaam_num_heads", "gaam_num_gaussians"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}.")
        if self.num_labels < 1:
            raise ValueError(f"`num_labels` must be at least 1, got {self.num_labels!r}.")
        hidden_size = self.backbone_config.hidden_size
        if self.head_type == "attention" and hidden_size % self.head_num_heads:
            raise ValueError(
                f"`head_num_heads`={self.head_num_heads} must divide the backbone's hidden size {hidden_size}."
            )
        num_states = self.backbone_config.num_hidden_layers + 1
        if self.head_type == "gaam_layers" and num_states // self.gaam_num_heads < 2:
            raise ValueError(
                f"`gaam_num_heads`={self.gaam_num_heads} splits the backbone's {num_states} hidden states (embeddings "
                f"+ {num_states - 1} layers) into chunks of fewer than 2; use at most {num_states // 2}."
            )


__all__ = ["HeadedConfig"]
