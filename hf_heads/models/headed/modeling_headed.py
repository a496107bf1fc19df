"""`headed` models: a task head (attention, GAAM-over-layers, last-token, mean) on any `AutoModel` backbone.

Padding is read from `attention_mask` for every backbone: pooling uses it, and position ids are derived from it
for backbones that take them, so a left-padded row gets the same positions as the row alone.

With a frozen backbone, `forward` also accepts what the backbone would have produced for the head (the columns that
`hf_heads.features.cache_backbone_features` stores) instead of `input_ids`, so a head trains for many epochs at the
cost of one backbone pass.
"""

import inspect

import torch
from torch import nn
from torch.nn import CrossEntropyLoss, MSELoss
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from .configuration_headed import HeadedConfig
from .gaam_layer import GaussianAdaptiveAttention
from .heads import AttentionHead, GaamLayersHead, pool_last, pool_mean
from .readable_weights import ReadableWeightsMixin


# What each head reads from the backbone, by the name of the `forward` argument (and cached dataset column) holding it.
HEAD_FEATURES = {
    "gaam_layers": "backbone_layer_states",  # (batch, layers + 1, hidden): every layer mean-pooled over real tokens
    "attention": "backbone_hidden_states",  # (batch, sequence, hidden) with `attention_mask`
    "last_token": "backbone_pooled_states",  # (batch, hidden): the last real token
    "mean": "backbone_pooled_states",  # (batch, hidden): the mean over real tokens
}
TOKEN_HEAD_FEATURES = {head_type: "backbone_hidden_states" for head_type in ("attention", "last_token")}


class HeadedPreTrainedModel(ReadableWeightsMixin, PreTrainedModel):
    config_class = HeadedConfig
    config: HeadedConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    head_features: dict[str, str] = HEAD_FEATURES

    def __init__(self, config: HeadedConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        self._backbone_takes_positions = "position_ids" in inspect.signature(self.backbone.forward).parameters

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GaussianAdaptiveAttention):
            # As in `gaam_gpt2`: unit-width Gaussians centred on the mean, perturbed so that they do not stay identical.
            init.zeros_(module.mean_offsets)
            init.normal_(module.c, mean=1.0, std=0.1)

    @classmethod
    def from_backbone(cls, name_or_path, head_type: str = "mean", num_labels: int = 2, backbone_kwargs=None, **head_kwargs):
        """
        A headed model whose backbone weights come from `name_or_path` (a Hub id or a folder; a causal LM checkpoint
        works too: its LM head is dropped and every backbone weight is kept). Head fields go in `head_kwargs`.
        """
        backbone = AutoModel.from_pretrained(name_or_path, **(backbone_kwargs or {}))
        config = HeadedConfig(backbone_config=backbone.config, head_type=head_type, num_labels=num_labels, **head_kwargs)
        model = cls(config)
        model.backbone.load_state_dict(backbone.state_dict())
        model.apply_freeze()
        return model

    def apply_freeze(self) -> None:
        """Freeze the backbone when `config.freeze_backbone` is set (called at construction and by `from_backbone`)."""
        self.backbone.requires_grad_(not self.config.freeze_backbone)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen backbone is a fixed feature extractor: its dropout stays off, so training sees the same features
        # that inference (and a feature cache) sees.
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    @property
    def feature_name(self) -> str:
        """The `forward` argument (and cached column) holding what this model's head reads from the backbone."""
        return self.head_features[self.config.head_type]

    def _run_backbone(self, input_ids, attention_mask, inputs_embeds, output_hidden_states: bool):
        if input_ids is None and inputs_embeds is None:
            raise ValueError(
                f"Pass `input_ids` (or `inputs_embeds`), or the cached backbone features `{self.feature_name}`."
            )
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        kwargs = {}
        if self._backbone_takes_positions:
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        missing = "last_hidden_state" if getattr(outputs, "last_hidden_state", None) is None else None
        if output_hidden_states and getattr(outputs, "hidden_states", None) is None:
            missing = "hidden_states"
        if missing:
            raise ValueError(
                f"The backbone ({type(self.backbone).__name__}) returned no `{missing}`; `headed` models need a "
                "backbone whose outputs carry its hidden states (an `AutoModel` encoder or decoder)."
            )
        return outputs, attention_mask

    def backbone_features(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> dict[str, torch.Tensor]:
        """
        Runs the backbone and returns what the head reads, keyed by the `forward` argument that accepts it (with the
        `attention_mask` for per-token features). These are the columns `cache_backbone_features` stores.
        """
        head_type = self.config.head_type
        outputs, attention_mask = self._run_backbone(
            input_ids, attention_mask, inputs_embeds, output_hidden_states=head_type == "gaam_layers"
        )
        if head_type == "gaam_layers":
            return {self.feature_name: self.head.pool_layers(outputs.hidden_states, attention_mask)}
        if self.feature_name == "backbone_hidden_states":
            return {self.feature_name: outputs.last_hidden_state, "attention_mask": attention_mask}
        pool = pool_last if head_type == "last_token" else pool_mean
        return {self.feature_name: pool(outputs.last_hidden_state, attention_mask)}

    def _features(self, input_ids, attention_mask, inputs_embeds, cached: dict) -> dict[str, torch.Tensor]:
        """The head's input: the cached features when given (checked against the head), else a backbone pass."""
        given = {name: value for name, value in cached.items() if value is not None}
        if not given:
            return self.backbone_features(input_ids, attention_mask, inputs_embeds)
        if input_ids is not None or inputs_embeds is not None:
            raise ValueError(
                f"Got both token inputs and cached backbone features ({', '.join(given)}); pass one or the other."
            )
        if set(given) != {self.feature_name}:
            raise ValueError(
                f"`head_type`={self.config.head_type!r} reads the cached column `{self.feature_name}`, got "
                f"{', '.join(f'`{name}`' for name in given)}; rebuild the cache with `cache_backbone_features` for "
                "this model."
            )
        features = given[self.feature_name]
        expected = self._feature_shape()
        if features.dim() != len(expected) + 1 or any(
            size is not None and features.shape[i + 1] != size for i, size in enumerate(expected)
        ):
            shape = ", ".join("any" if size is None else str(size) for size in expected)
            raise ValueError(
                f"`{self.feature_name}` has shape {tuple(features.shape)}; this model's head expects (batch, {shape})."
            )
        features = features.to(self.dtype)
        if self.feature_name != "backbone_hidden_states":
            return {self.feature_name: features}
        if attention_mask is None:
            attention_mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        return {self.feature_name: features, "attention_mask": attention_mask}

    def _feature_shape(self) -> tuple:
        hidden_size = self.config.backbone_config.hidden_size
        if self.feature_name == "backbone_layer_states":
            return (self.config.backbone_config.num_hidden_layers + 1, hidden_size)
        if self.feature_name == "backbone_hidden_states":
            return (None, hidden_size)
        return (hidden_size,)


class HeadedModelForSequenceClassification(HeadedPreTrainedModel):
    def __init__(self, config: HeadedConfig):
        super().__init__(config)
        hidden_size = config.backbone_config.hidden_size
        if config.head_type == "attention":
            self.head = AttentionHead(
                hidden_size, config.head_num_heads, config.head_num_layers, config.head_pooling, config.head_dropout
            )
        elif config.head_type == "gaam_layers":
            self.head = GaamLayersHead(config.gaam_num_heads, config.gaam_num_gaussians)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(hidden_size, config.num_labels)
        self.post_init()
        self.apply_freeze()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        labels=None,
        backbone_layer_states=None,
        backbone_hidden_states=None,
        backbone_pooled_states=None,
        **kwargs,
    ):
        r"""
        backbone_layer_states / backbone_hidden_states / backbone_pooled_states (`torch.Tensor`, *optional*):
            Cached backbone features (see `hf_heads.features.cache_backbone_features`), instead of `input_ids`.
        """
        features = self._features(
            input_ids,
            attention_mask,
            inputs_embeds,
            {
                "backbone_layer_states": backbone_layer_states,
                "backbone_hidden_states": backbone_hidden_states,
                "backbone_pooled_states": backbone_pooled_states,
            },
        )
        if self.config.head_type == "gaam_layers":
            pooled = self.head(features["backbone_layer_states"])
        elif self.config.head_type == "attention":
            pooled = self.head(features["backbone_hidden_states"], features["attention_mask"])
        else:
            pooled = features["backbone_pooled_states"]
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = MSELoss()(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = CrossEntropyLoss()(logits, labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class HeadedModelForTokenClassification(HeadedPreTrainedModel):
    head_features = TOKEN_HEAD_FEATURES

    def __init__(self, config: HeadedConfig):
        if config.head_type not in self.head_features:
            raise ValueError(
                f"`head_type`={config.head_type!r} pools a whole sequence and cannot label tokens; token "
                f"classification accepts {', '.join(map(repr, self.head_features))} ('last_token' is a linear layer "
                "on every token)."
            )
        super().__init__(config)
        hidden_size = config.backbone_config.hidden_size
        if config.head_type == "attention":
            self.head = AttentionHead(
                hidden_size, config.head_num_heads, config.head_num_layers, config.head_pooling, config.head_dropout
            )
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(hidden_size, config.num_labels)
        self.post_init()
        self.apply_freeze()

    def backbone_features(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> dict[str, torch.Tensor]:
        outputs, attention_mask = self._run_backbone(input_ids, attention_mask, inputs_embeds, False)
        return {"backbone_hidden_states": outputs.last_hidden_state, "attention_mask": attention_mask}

    def forward(
        self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, backbone_hidden_states=None, **kwargs
    ):
        r"""
        backbone_hidden_states (`torch.Tensor`, *optional*):
            Cached backbone features (see `hf_heads.features.cache_backbone_features`), instead of `input_ids`.
        """
        features = self._features(
            input_ids, attention_mask, inputs_embeds, {"backbone_hidden_states": backbone_hidden_states}
        )
        hidden_states = features["backbone_hidden_states"]
        if self.config.head_type == "attention":
            hidden_states = self.head.encode(hidden_states, features["attention_mask"])
        logits = self.classifier(self.dropout(hidden_states))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits)


__all__ = ["HeadedModelForSequenceClassification", "HeadedModelForTokenClassification", "HeadedPreTrainedModel"]
