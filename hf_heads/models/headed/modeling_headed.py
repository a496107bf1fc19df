"""`headed` models: a task head (attention, GAAM-over-layers, last-token, mean) on any `AutoModel` backbone.

Padding is read from `attention_mask` for every backbone: pooling uses it, and position ids are derived from it
for backbones that take them, so a left-padded row gets the same positions as the row alone.
"""

import inspect

import torch
from torch import nn
from torch.nn import CrossEntropyLoss, MSELoss
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from .configuration_headed import HeadedConfig
from .heads import AttentionHead, GaamLayersHead, pool_last, pool_mean


class HeadedPreTrainedModel(PreTrainedModel):
    config_class = HeadedConfig
    config: HeadedConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def __init__(self, config: HeadedConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        self._backbone_takes_positions = "position_ids" in inspect.signature(self.backbone.forward).parameters

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

    def _run_backbone(self, input_ids, attention_mask, inputs_embeds, output_hidden_states: bool):
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
        return outputs, attention_mask


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

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        head_type = self.config.head_type
        outputs, attention_mask = self._run_backbone(
            input_ids, attention_mask, inputs_embeds, output_hidden_states=head_type == "gaam_layers"
        )
        if head_type == "gaam_layers":
            pooled = self.head(self.head.pool_layers(outputs.hidden_states, attention_mask))
        elif head_type == "attention":
            pooled = self.head(outputs.last_hidden_state, attention_mask)
        elif head_type == "last_token":
            pooled = pool_last(outputs.last_hidden_state, attention_mask)
        else:
            pooled = pool_mean(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = MSELoss()(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = CrossEntropyLoss()(logits, labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class HeadedModelForTokenClassification(HeadedPreTrainedModel):
    TOKEN_HEADS = ("attention", "last_token")

    def __init__(self, config: HeadedConfig):
        if config.head_type not in self.TOKEN_HEADS:
            raise ValueError(
                f"`head_type`={config.head_type!r} pools a whole sequence and cannot label tokens; token "
                f"classification accepts {', '.join(map(repr, self.TOKEN_HEADS))} ('last_token' is a linear layer "
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

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        outputs, attention_mask = self._run_backbone(input_ids, attention_mask, inputs_embeds, False)
        hidden_states = outputs.last_hidden_state
        if self.config.head_type == "attention":
            hidden_states = self.head.encode(hidden_states, attention_mask)
        logits = self.classifier(self.dropout(hidden_states))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits)


__all__ = ["HeadedModelForSequenceClassification", "HeadedModelForTokenClassification", "HeadedPreTrainedModel"]
