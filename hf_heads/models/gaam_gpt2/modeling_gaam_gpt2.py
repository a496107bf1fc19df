"""GAAM-GPT2: GPT-2 with Gaussian Adaptive Attention in its blocks, with every task head GPT-2 has.

Each class subclasses its GPT-2 counterpart and overrides only what GAAM changes: the block, the base model's inputs
to GAAM (padding mask, positions), the cache of blocks without attention, the sequence classifier's pooling. GPT-2's
constructors run unchanged and GAAM's parts take the place of GPT-2's in `post_init`, which those constructors call
last. Output recording (`output_attentions`, `output_hidden_states`), `return_dict` handling, attention backends,
gradient checkpointing, weight tying and generation are GPT-2's.

Parameter names are GPT-2's (`transformer.h.N.attn...`, `lm_head`, `score`, `classifier`, `qa_outputs`), so any GPT-2
checkpoint loads here; GAAM adds `transformer.h.N.gaam.{mean_offsets,c}` and, in "augment" mode,
`transformer.h.N.gaam_gate.weight`. This file imports only torch, transformers and files beside it, so a folder saved
for `trust_remote_code=True` works without `hf_heads` installed.
"""

import warnings

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DummyLayer, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import SequenceClassifierOutputWithPast
from transformers.models.gpt2.modeling_gpt2 import (
    GPT2Block,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)
from transformers.utils import can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_gaam_gpt2 import GaamGPT2Config
from .gaam_layer import GaussianAdaptiveAttention
from .losses import classification_loss
from .readable_weights import ReadableWeightsMixin


logger = logging.get_logger(__name__)


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


def _check_gaam_shapes(config: GaamGPT2Config) -> None:
    """
    Checks of GAAM fields against the model's sizes, made where a model is built: a config may hold placeholder sizes
    (`n_embd=0`, as `GPT2Config` allows) that are only filled in before a model is made from it.
    """
    if config.gaam_layers is not None:
        outside = [index for index in config.gaam_layers if not 0 <= index < config.n_layer]
        if outside or len(set(config.gaam_layers)) != len(config.gaam_layers):
            raise ValueError(
                f"`gaam_layers`={config.gaam_layers!r} must list distinct block indices in [0, {config.n_layer - 1}] "
                f"(n_layer={config.n_layer}), or be None for every block."
            )
    if config.gaam_norm_axis == "features" and config.n_embd < 2:
        raise ValueError(
            f"`n_embd`={config.n_embd}: GAAM over the features needs at least 2 of them (a head reads at least 2); "
            "build the model from a config with its real sizes."
        )
    if config.gaam_norm_axis == "features" and config.n_embd // config.gaam_num_heads < 2:
        raise ValueError(
            f"`gaam_num_heads`={config.gaam_num_heads} splits n_embd={config.n_embd} features into chunks of "
            f"{config.n_embd // config.gaam_num_heads}; each GAAM head needs at least 2, so use at most "
            f"{config.n_embd // 2} heads."
        )


class GaamGPT2PreTrainedModel(ReadableWeightsMixin, GPT2PreTrainedModel):
    """
    GPT-2's base class with GAAM's initialisation. Everything else is GPT-2's: `_can_record_outputs` records every
    block's hidden states and the attention weights of every block that keeps self-attention ("replace" blocks have
    none), and the attention backends, gradient checkpointing and cache support are GPT-2's.
    """

    config_class = GaamGPT2Config
    config: GaamGPT2Config
    # Device maps and FSDP wrap whole blocks: GAAM's branch reads the attention output of its own block.
    _no_split_modules = ["GaamGPT2Block"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GaussianAdaptiveAttention):
            init.zeros_(module.mean_offsets)
            # Unit-width Gaussians, perturbed so that a head's Gaussians do not stay identical during training.
            init.normal_(module.c, mean=1.0, std=0.1)
        if isinstance(module, GaamGate):
            init.constant_(module.weight, self.config.gaam_gate_init)

    def post_init(self):
        # GPT-2's task-model constructors build a GPT-2 base model and call `post_init` last: GAAM-GPT2's base model
        # takes its place here, before weights are initialised and tied, so the constructors stay GPT-2's own.
        if type(getattr(self, "transformer", None)) is GPT2Model:
            gpt2 = self.transformer
            self.transformer = GaamGPT2Model(self.config)
            if gpt2.is_activation_checkpointing:
                # GPT-2's `post_init` consumed a legacy `config.gradient_checkpointing=True` on the model replaced.
                self.transformer.activation_checkpointing_enable()
        super().post_init()


class GaamGPT2Model(GaamGPT2PreTrainedModel, GPT2Model):
    def __init__(self, config: GaamGPT2Config):
        _check_gaam_shapes(config)
        super().__init__(config)

    def post_init(self):
        # GPT2Model.__init__ builds GPT-2 blocks and calls `post_init` last: GAAM-GPT2 blocks (GPT-2's parameter names,
        # plus GAAM's) take their place before weights are initialised.
        if any(type(block) is GPT2Block for block in self.h):
            self.h = nn.ModuleList([GaamGPT2Block(self.config, layer_idx=i) for i in range(len(self.h))])
        super().post_init()

    @property
    def attention_free(self) -> bool:
        """True when GAAM replaces self-attention in every block: no attention weights and no key/value state."""
        return not any(hasattr(block, "attn") for block in self.h)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ):
        if self.attention_free:
            # No block attends, so there is no key/value state to keep: like an encoder, the model ignores
            # `use_cache` rather than return a cache of empty layers. (In a causal LM, GAAM reads each token alone, so
            # generation needs nothing from earlier steps but the positions `generate` passes.)
            use_cache, cache = False, None
        elif self.config.use_cache if use_cache is None else use_cache:
            cache = self._without_state_for_gaam_blocks(cache)
        if self.config.gaam_norm_axis == "sequence":
            # GAAM over positions needs the (batch, seq) padding mask itself, not the 4-D causal mask.
            kwargs["gaam_attention_mask"] = _padding_mask(input_ids, inputs_embeds, attention_mask)
        if position_ids is None:
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = _positions_from_mask(input_ids, inputs_embeds, attention_mask, past_length)
        return super().forward(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            use_cache=use_cache,
            **kwargs,
        )

    def _without_state_for_gaam_blocks(self, cache: Cache | None) -> Cache:
        """
        The cache with transformers' `DummyLayer` (a layer without attention keeps no key/value state) at each
        "replace" block, so the cache's length and the attention masks come from the blocks that attend.
        """
        stateless = [i for i, block in enumerate(self.h) if not hasattr(block, "attn")]
        if not stateless:
            return cache
        if cache is None:
            cache = DynamicCache(config=self.config)
        if not cache.layers and cache.layer_class_to_replicate is not None:
            # A cache that grows a layer when a block first writes to it (`DynamicCache()`): give it all its layers.
            cache.layers.extend(cache.layer_class_to_replicate() for _ in self.h)
        if len(cache.layers) == len(self.h):
            for index in stateless:
                if not isinstance(cache.layers[index], DummyLayer):
                    cache.layers[index] = DummyLayer()
        return cache


def _positions_from_mask(input_ids, inputs_embeds, attention_mask, past_length: int) -> torch.Tensor | None:
    """
    Positions counted over real tokens, so a left-padded text gets the positions it has alone (GPT-2 itself counts
    padding, and a left-padded prediction then differs). Without padding or with right padding these are GPT-2's own
    positions. The mask covers the tokens given after `past_length` cached ones (transformers' convention), so a
    decoding step continues the count of the full pass; an attention-free model keeps no cache, and a mask longer than
    its input covers the tokens it already read. Any other mask: GPT-2's positions (None).
    """
    length = (input_ids if input_ids is not None else inputs_embeds[..., 0]).shape[1]
    if attention_mask is None or attention_mask.dim() != 2:
        return None
    covered = attention_mask.shape[1]
    if covered != past_length + length and not (past_length == 0 and covered > length):
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]


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


# `GenerationMixin` is named among the direct bases (the MRO already has it, through GPT-2's class), as in every
# generative transformers class: transformers' generation tests require it there.
class GaamGPT2LMHeadModel(GaamGPT2PreTrainedModel, GPT2LMHeadModel, GenerationMixin):
    def __init__(self, config: GaamGPT2Config):
        _refuse_sequence_axis_for_causal_lm(config)
        super().__init__(config)
        # transformers infers the loss from the class name, which does not say "ForCausalLM": named here, `Trainer`
        # counts the shifted labels (not position 0 of each row) when it normalises by `num_items_in_batch`.
        self.loss_type = "ForCausalLM"

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        if self.transformer.attention_free:
            # No block keeps key/value state, so `generate` gets no cache to hand around (or to return, empty). Each
            # step still reads only the new token: its output needs nothing from earlier steps but the positions.
            return
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)


class GaamGPT2ForSequenceClassification(GaamGPT2PreTrainedModel, GPT2ForSequenceClassification):
    """GAAM-GPT2 with a linear `score` head on the last real token (`"last"`) or the mean of real tokens (`"mean"`)."""

    # The loss is a mean over the batch; `forward` takes `**kwargs`, so without this `Trainer` would take it for a sum
    # over `num_items_in_batch` and scale it by the accumulation steps and processes.
    accepts_loss_kwargs = False

    def __init__(self, config: GaamGPT2Config):
        super().__init__(config)
        if config.gaam_placement == "replace" and config.gaam_layers is None and config.classifier_pooling == "last":
            warnings.warn(
                "gaam_placement='replace' on every block moves no content between tokens, so with "
                "classifier_pooling='last' the prediction sees only the last token. Use classifier_pooling='mean'.",
                stacklevel=2,
            )

    # GPT-2's forward pools the last non-pad token found from `input_ids`; this one reads the padding from
    # `attention_mask` (left and right padding alike) and can average real tokens.
    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
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
        loss = None if labels is None else classification_loss(logits, labels, self.config, self.num_labels)
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
            if input_ids is not None and batch_size != 1 and self.config.classifier_pooling == "last":
                raise ValueError(
                    "Cannot find the last token of each row: pass `attention_mask`, or set `config.pad_token_id`."
                )
            if input_ids is None:
                # GPT-2's rule: embeddings show no padding, so every position counts.
                logger.warning_once(
                    f"{self.__class__.__name__} cannot see padding in `inputs_embeds`: pass `attention_mask` if the "
                    "rows are padded."
                )
            real = torch.ones(batch_size, sequence_length, dtype=torch.bool, device=hidden_states.device)
        if self.config.classifier_pooling == "mean":
            weights = real.to(hidden_states.dtype).unsqueeze(-1)
            return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        # The rightmost real token: works for left and right padding alike.
        positions = torch.arange(sequence_length, device=hidden_states.device)
        last = (positions * real).argmax(-1)
        return hidden_states[torch.arange(batch_size, device=hidden_states.device), last]

class GaamGPT2ForTokenClassification(GaamGPT2PreTrainedModel, GPT2ForTokenClassification):
    accepts_loss_kwargs = False  # a per-batch mean, as for the sequence classifier


class GaamGPT2ForQuestionAnswering(GaamGPT2PreTrainedModel, GPT2ForQuestionAnswering):
    accepts_loss_kwargs = False  # a per-batch mean, as for the sequence classifier


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
