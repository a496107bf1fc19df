"""GAAM-GPT2: GPT-2 with Gaussian Adaptive Attention in its blocks, with every task head GPT-2 has.

Parameter names are GPT-2's (`transformer.h.N.attn...`, `lm_head`, `score`, `classifier`, `qa_outputs`), so any GPT-2
checkpoint loads here; GAAM adds `transformer.h.N.gaam.{mean_offsets,c}` and, in "augment" mode,
`transformer.h.N.gaam_gate.weight`. This file imports only torch, transformers and files beside it, so a folder saved for
`trust_remote_code=True` works without `hf_heads` installed.
"""

import warnings

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutputWithPast
from transformers.models.gpt2.modeling_gpt2 import (
    GPT2Block,
    GPT2ForQuestionAnswering,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)

from .configuration_gaam_gpt2 import GaamGPT2Config
from .gaam_layer import GaussianAdaptiveAttention
from .readable_weights import ReadableWeightsMixin


class GaamGate(nn.Module):
    """A learned scalar on GAAM's residual branch; a module (not a bare parameter) so `peft` can train it."""

    def __init__(self, initial_value: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(initial_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.weight * hidden_states


class GaamGPT2Block(GPT2Block):
    """A GPT-2 block with GAAM after (`"augment"`) or instead of (`"replace"`) its self-attention."""

    def __init__(self, config: GaamGPT2Config, layer_idx: int):
        super().__init__(config, layer_idx=layer_idx)
        self.gaam_placement = config.gaam_placement if layer_idx in config.gaam_block_indices else None
        if self.gaam_placement is None:
            return
        axis = 1 if config.gaam_norm_axis == "sequence" else -1
        self.gaam = GaussianAdaptiveAttention(
            config.gaam_num_heads, config.gaam_num_gaussians, axis, config.gaam_eps, config.gaam_normalization
        )
        if self.gaam_placement == "augment":
            # Open from the start (see `gaam_gate_init`): an optimiser does not open a closed gate on a branch
            # that starts out mostly parallel to the residual stream.
            self.gaam_gate = GaamGate(config.gaam_gate_init)
        else:
            # Unused weights would be dead parameters (and DDP errors on parameters without gradients).
            del self.attn

    def forward(
        self,
        hidden_states: torch.Tensor,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = False,
        gaam_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.gaam_placement is None:
            return super().forward(
                hidden_states, cache, attention_mask, encoder_hidden_states, encoder_attention_mask, use_cache, **kwargs
            )
        if encoder_hidden_states is not None:
            raise ValueError("GAAM-GPT2 blocks do not support cross-attention (`encoder_hidden_states`).")

        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        if self.gaam_placement == "replace":
            hidden_states = residual + self.gaam(hidden_states, attention_mask=gaam_attention_mask)
        else:
            attn_output, _ = self.attn(
                hidden_states, cache=cache, attention_mask=attention_mask, use_cache=use_cache, **kwargs
            )
            hidden_states = attn_output + residual
            hidden_states = hidden_states + self.gaam_gate(self.gaam(hidden_states, attention_mask=gaam_attention_mask))

        residual = hidden_states
        hidden_states = self.ln_2(hidden_states)
        return residual + self.mlp(hidden_states)


class GaamGPT2PreTrainedModel(ReadableWeightsMixin, GPT2PreTrainedModel):
    config_class = GaamGPT2Config
    config: GaamGPT2Config
    _no_split_modules = ["GaamGPT2Block"]
    _can_record_outputs = {"hidden_states": GaamGPT2Block}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GaussianAdaptiveAttention):
            init.zeros_(module.mean_offsets)
            # Unit-width Gaussians, perturbed so that a head's Gaussians do not stay identical during training.
            init.normal_(module.c, mean=1.0, std=0.1)
        if isinstance(module, GaamGate):
            init.constant_(module.weight, self.config.gaam_gate_init)


class GaamGPT2Model(GaamGPT2PreTrainedModel, GPT2Model):
    def __init__(self, config: GaamGPT2Config):
        # GPT2Model.__init__ would build plain GPT-2 blocks; this is the same body with GAAM-GPT2 blocks.
        GaamGPT2PreTrainedModel.__init__(self, config)
        self.embed_dim = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.max_position_embeddings, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GaamGPT2Block(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self._attn_implementation = config._attn_implementation
        self.post_init()

    def forward(self, input_ids=None, cache=None, attention_mask=None, **kwargs):
        if self.config.gaam_norm_axis == "sequence":
            # GAAM over positions needs the (batch, seq) padding mask itself, not the 4-D causal mask.
            kwargs["gaam_attention_mask"] = _padding_mask(input_ids, kwargs.get("inputs_embeds"), attention_mask)
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = _positions_from_mask(input_ids, kwargs.get("inputs_embeds"), attention_mask)
        return super().forward(input_ids, cache=cache, attention_mask=attention_mask, **kwargs)


def _positions_from_mask(input_ids, inputs_embeds, attention_mask) -> torch.Tensor | None:
    """
    Positions counted over real tokens, so a left-padded text gets the positions it has alone (GPT-2 itself counts
    padding, and a left-padded prediction then differs). Without padding or with right padding these are GPT-2's own
    positions. Only when the mask covers exactly the given tokens (no cache offset to account for).
    """
    length = (input_ids if input_ids is not None else inputs_embeds[..., 0]).shape[1]
    if attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[1] != length:
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _padding_mask(input_ids, inputs_embeds, attention_mask) -> torch.Tensor:
    if attention_mask is not None and attention_mask.dim() == 2:
        return attention_mask
    reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
    return torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)


def _refuse_sequence_axis_for_causal_lm(config: GaamGPT2Config) -> None:
    if config.gaam_norm_axis == "sequence":
        raise ValueError(
            "`gaam_norm_axis`='sequence' lets every position see statistics of later positions, which leaks the "
            "future into a causal language model; use gaam_norm_axis='features' (causal by construction)."
        )


class GaamGPT2LMHeadModel(GaamGPT2PreTrainedModel, GPT2LMHeadModel):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GaamGPT2Config):
        _refuse_sequence_axis_for_causal_lm(config)
        GaamGPT2PreTrainedModel.__init__(self, config)
        self.transformer = GaamGPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()


class GaamGPT2ForSequenceClassification(GaamGPT2PreTrainedModel):
    """GAAM-GPT2 with a linear `score` head on the last real token (`"last"`) or the mean of real tokens (`"mean"`)."""

    def __init__(self, config: GaamGPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GaamGPT2Model(config)
        self.score = nn.Linear(config.n_embd, self.num_labels, bias=False)
        if config.gaam_placement == "replace" and config.gaam_layers is None and config.classifier_pooling == "last":
            warnings.warn(
                "gaam_placement='replace' on every block moves no content between tokens, so with "
                "classifier_pooling='last' the prediction sees only the last token. Use classifier_pooling='mean'.",
                stacklevel=2,
            )
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        outputs = self.transformer(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        pooled = self._pool(outputs.last_hidden_state, input_ids, attention_mask)
        logits = self.score(pooled)
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _pool(self, hidden_states, input_ids, attention_mask) -> torch.Tensor:
        batch_size, sequence_length = hidden_states.shape[:2]
        if attention_mask is not None:
            real = attention_mask.to(hidden_states.device, torch.bool)
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = input_ids.to(hidden_states.device) != self.config.pad_token_id
        else:
            if batch_size != 1 and self.config.classifier_pooling == "last":
                raise ValueError(
                    "Cannot find the last token of each row: pass `attention_mask`, or set `config.pad_token_id`."
                )
            real = torch.ones(batch_size, sequence_length, dtype=torch.bool, device=hidden_states.device)
        if self.config.classifier_pooling == "mean":
            weights = real.to(hidden_states.dtype).unsqueeze(-1)
            return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        # The rightmost real token: works for left and right padding alike.
        positions = torch.arange(sequence_length, device=hidden_states.device)
        last = (positions * real).argmax(-1)
        return hidden_states[torch.arange(batch_size, device=hidden_states.device), last]

    def _loss(self, logits, labels) -> torch.Tensor:
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


class GaamGPT2ForTokenClassification(GaamGPT2PreTrainedModel, GPT2ForTokenClassification):
    def __init__(self, config: GaamGPT2Config):
        GaamGPT2PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.transformer = GaamGPT2Model(config)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class GaamGPT2ForQuestionAnswering(GaamGPT2PreTrainedModel, GPT2ForQuestionAnswering):
    def __init__(self, config: GaamGPT2Config):
        GaamGPT2PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.transformer = GaamGPT2Model(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()


__all__ = [
    "GaamGPT2Block",
    "GaamGate",
    "GaamGPT2ForQuestionAnswering",
    "GaamGPT2ForSequenceClassification",
    "GaamGPT2ForTokenClassification",
    "GaamGPT2LMHeadModel",
    "GaamGPT2Model",
    "GaamGPT2PreTrainedModel",
]
