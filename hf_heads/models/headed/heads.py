"""The task heads of `headed` models, one class per head type, in a registry keyed by `config.head_type`.

A head declares what it reads from the backbone (`feature`: the `forward` argument and cached-dataset column holding
it, with `feature_shape`), how that is computed from the backbone's outputs (`extract`), which tasks it serves, the
learning rate it trains well with, and its own forward, which returns the representation that the model's
`classifier` reads (`output_size` wide). The model classes hold no head-specific code, so a new head is one class
here, or one `register_head(name, cls)` call in the user's own module.

A registered head may read a new column (its own `feature`): a model's `forward` takes it as a keyword (pass
`remove_unused_columns=False` to `Trainer`, which keeps only the columns `forward` names).

Padding always comes from `attention_mask`. This file imports only torch, transformers and `gaam_layer.py` beside it:
model folders saved for `trust_remote_code=True` carry it.
"""

import math
import warnings

import torch
from torch import nn
from transformers import initialization as init

from .gaam_layer import GaussianAdaptiveAttention


SEQUENCE, TOKEN = "sequence classification", "token classification"


def pool_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


def pool_last(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The rightmost real token of each row (left and right padding alike)."""
    positions = torch.arange(attention_mask.shape[-1], device=hidden_states.device)
    last = (positions * attention_mask.to(torch.bool)).argmax(-1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]


def head_error(head_type: str, field: str, value, accepted: str) -> ValueError:
    """The one shape of every construction-time error: head, field, value and what fits."""
    return ValueError(f"head_type={head_type!r}: `{field}`={value!r} does not fit; {accepted}.")


# Feature names whose built-in heads read more than the pooled last hidden state.
UNPOOLED_FEATURES = {
    "backbone_hidden_states": "every token's last hidden state, (batch, sequence, hidden)",
    "backbone_layer_states": "every layer's hidden state, mean-pooled, (batch, layers + 1, hidden)",
}


class Head(nn.Module):
    """
    Base of every head. Subclasses set the class attributes below and implement `forward(features, attention_mask)`,
    which returns (batch, output_size) for sequence classification or (batch, sequence, output_size) for token
    classification; the model adds dropout and a linear `classifier`.

    What `forward` receives is what `extract` makes of the backbone's outputs, shaped as `feature_shape` says: by
    default the last hidden state mean-pooled over real tokens, (batch, hidden). `feature` only names it. To read
    something else (every token's state, every layer's), override `extract` and `feature_shape`, or subclass a head
    that reads it (`LinearHead` every token's last hidden state, `LayerStatesHead` every layer's, pooled).
    """

    # The `forward` argument and cached column holding what this head reads from the backbone.
    feature: str = "backbone_pooled_states"
    # Tasks the head can serve (`SEQUENCE`, `TOKEN`).
    tasks: tuple = (SEQUENCE,)
    # Whether `extract` needs every layer's hidden states (`output_hidden_states=True`) or the last one only.
    reads_every_layer: bool = False
    # A learning rate that trains this head well on a frozen backbone (the recipes' default; benchmarks/quality.py).
    default_learning_rate: float = 1e-3

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A head naming what the built-in heads read per token or per layer while inheriting the pooled default would
        # receive (batch, hidden) under a name that promises more, and fail far from the cause.
        if cls.feature in UNPOOLED_FEATURES and cls.extract.__func__ is Head.extract.__func__:
            raise TypeError(
                f"{cls.__qualname__} sets feature={cls.feature!r} ({UNPOOLED_FEATURES[cls.feature]} in the built-in "
                "heads) but inherits Head.extract, which gives the last hidden state mean-pooled, (batch, hidden): "
                "override `extract` and `feature_shape` too, or subclass the built-in head that reads it."
            )

    def __init__(self, config, task: str):
        super().__init__()
        self.output_size = config.backbone_config.hidden_size

    @classmethod
    def check(cls, config, task: str | None = None) -> None:
        """
        Raises, naming head, field, value and what fits, when this head cannot serve `config`'s backbone (or `task`,
        when given). The configuration calls it without a task, each model class with its own.
        """
        if task is not None and task not in cls.tasks:
            serving = [name for name, head in HEADS.items() if task in head.tasks]
            raise ValueError(
                f"head_type={config.head_type!r} cannot serve {task}; heads that can: {', '.join(map(repr, serving))}."
            )

    @classmethod
    def feature_shape(cls, backbone_config) -> tuple:
        """Shape of `feature` after the batch axis; `None` marks a sequence axis (then `attention_mask` goes along)."""
        return (backbone_config.hidden_size,)

    @classmethod
    def extract(cls, outputs, attention_mask: torch.Tensor) -> torch.Tensor:
        """`feature` from the backbone's outputs (what `cache_backbone_features` stores)."""
        return pool_mean(outputs.last_hidden_state, attention_mask)

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return features


class MeanHead(Head):
    """A linear classifier on the mean of the last hidden states over real tokens."""

    default_learning_rate = 3e-2


class LastTokenHead(Head):
    """A linear classifier on the last real token's hidden state (where a causal backbone has read the whole text)."""

    feature = "backbone_last_token_states"
    default_learning_rate = 3e-2

    @classmethod
    def extract(cls, outputs, attention_mask):
        return pool_last(outputs.last_hidden_state, attention_mask)


class LinearHead(Head):
    """A linear classifier on every token's last hidden state (token classification)."""

    feature = "backbone_hidden_states"
    tasks = (TOKEN,)
    default_learning_rate = 3e-2

    @classmethod
    def feature_shape(cls, backbone_config):
        return (None, backbone_config.hidden_size)

    @classmethod
    def extract(cls, outputs, attention_mask):
        return outputs.last_hidden_state


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """
    `nn.MultiheadAttention`'s mask (True = ignore) for an attention mask (1 = real token). A row without real tokens
    attends over its padding instead: attention over nothing is NaN on PyTorch's inference fast path (and 0 outside
    it), so such a row would predict NaN in inference only. Its prediction carries no information either way; now it
    is finite, and the same in training and inference.
    """
    padding = ~attention_mask.to(torch.bool)
    return padding & ~padding.all(-1, keepdim=True)


class SelfAttentionLayer(nn.Module):
    """Pre-norm multi-head self-attention and feed-forward, each with a residual (a transformer encoder layer)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_attention = nn.LayerNorm(hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.norm_feed_forward = nn.LayerNorm(hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        normed = self.norm_attention(hidden_states)
        attended, _ = self.attention(
            normed, normed, normed, key_padding_mask=key_padding_mask(attention_mask), need_weights=False
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.feed_forward(self.norm_feed_forward(hidden_states)))


class AttentionHead(LinearHead):
    """
    Self-attention layers (`head_num_layers`, `head_num_heads`) over the last hidden states; for sequences, pooled by
    `head_pooling` ("mean", "last" real token, or "attention": a learned query attends over real tokens).
    """

    tasks = (SEQUENCE, TOKEN)
    default_learning_rate = 1e-3

    def __init__(self, config, task):
        super().__init__(config, task)
        hidden_size = config.backbone_config.hidden_size
        self.layers = nn.ModuleList(
            SelfAttentionLayer(hidden_size, config.head_num_heads, config.head_dropout)
            for _ in range(config.head_num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        # Token classification labels every encoded token: no pooling, so no pooling parameters.
        self.pooling = config.head_pooling if task == SEQUENCE else None
        if self.pooling == "attention":
            self.query = nn.Parameter(torch.zeros(1, 1, hidden_size))
            self.pool_attention = nn.MultiheadAttention(hidden_size, config.head_num_heads, batch_first=True)

    def init_parameters(self):
        if self.pooling == "attention":
            init.zeros_(self.query)

    @classmethod
    def check(cls, config, task=None):
        super().check(config, task)
        hidden_size = config.backbone_config.hidden_size
        if hidden_size % config.head_num_heads:
            divisors = [n for n in range(1, min(hidden_size, 16) + 1) if hidden_size % n == 0]
            raise head_error(
                config.head_type, "head_num_heads", config.head_num_heads,
                f"it must divide the backbone's hidden size {hidden_size} (e.g. {divisors})",
            )

    def forward(self, hidden_states, attention_mask):
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask)
        encoded = self.norm(hidden_states)
        if self.pooling is None:
            return encoded
        if self.pooling == "mean":
            return pool_mean(encoded, attention_mask)
        if self.pooling == "last":
            return pool_last(encoded, attention_mask)
        query = self.query.expand(encoded.shape[0], -1, -1)
        pooled, _ = self.pool_attention(
            query, encoded, encoded, key_padding_mask=key_padding_mask(attention_mask), need_weights=False
        )
        return pooled.squeeze(1)


class LayerStatesHead(Head):
    """Base of heads that read every layer's hidden states, each mean-pooled over real tokens."""

    feature = "backbone_layer_states"
    reads_every_layer = True

    @classmethod
    def feature_shape(cls, backbone_config):
        # The embeddings' output, then one entry per layer.
        return (backbone_config.num_hidden_layers + 1, backbone_config.hidden_size)

    @classmethod
    def extract(cls, outputs, attention_mask):
        return torch.stack([pool_mean(states, attention_mask) for states in outputs.hidden_states], dim=1)


class GaamLayersHead(LayerStatesHead):
    """
    GAAM across the layer axis (`gaam_num_heads`, `gaam_num_gaussians`, `gaam_normalization`) with a residual, then
    the layers averaged.
    """

    default_learning_rate = 1e-2

    def __init__(self, config, task):
        super().__init__(config, task)
        self.gaam = GaussianAdaptiveAttention(
            config.gaam_num_heads, config.gaam_num_gaussians, norm_axis=1, normalization=config.gaam_normalization
        )

    @classmethod
    def check(cls, config, task=None):
        super().check(config, task)
        num_states = config.backbone_config.num_hidden_layers + 1
        if num_states // config.gaam_num_heads < 2:
            raise head_error(
                config.head_type, "gaam_num_heads", config.gaam_num_heads,
                f"GAAM heads split the backbone's {num_states} hidden states (embeddings + {num_states - 1} layers) "
                f"into chunks of at least 2, so use at most {num_states // 2}",
            )

    def forward(self, layer_states, attention_mask):
        return (layer_states + self.gaam(layer_states)).mean(1)


class ScalarMixHead(LayerStatesHead):
    """
    ELMo's scalar mix: a softmax-weighted sum of every layer's pooled state times a learned scale (the frozen-encoder
    probe that a GAAM head has to beat).
    """

    default_learning_rate = 3e-2

    def __init__(self, config, task):
        super().__init__(config, task)
        self.layer_weights = nn.Parameter(torch.zeros(config.backbone_config.num_hidden_layers + 1))
        self.scale = nn.Parameter(torch.ones(()))

    def init_parameters(self):
        init.zeros_(self.layer_weights)  # every layer weighs the same at first
        init.ones_(self.scale)

    def forward(self, layer_states, attention_mask):
        weights = self.layer_weights.softmax(0).to(layer_states.dtype)
        return self.scale * torch.einsum("bld,l->bd", layer_states, weights)


class DaamGate(nn.Module):
    """
    The GAAM authors' density gate over the layer axis (their PEFT head, not the reference op): heads split the
    layers into equal chunks; per head and feature, the mean and population variance run across the chunk's layers,
    `y = (x - (mean + mean_offset)) / sqrt(var + eps)` and the gate `exp(-y^2 / (2 c))` (c is a variance; the gate is
    not normalised) multiplies the states. `mean_offset` starts at 0 and `c` at 2, one per head and feature.
    """

    eps = 1e-8  # the authors' epsilon (as in their `gaussian-adaptive-attention` package)
    norm_axis = 1  # layers: what `importance_factors` averages the gate along
    reports_importance = True  # `hf_heads.importance_factors` draws this gate per layer, as it does GAAM's weights

    def __init__(self, num_heads: int, hidden_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.mean_offset = nn.Parameter(torch.zeros(num_heads, hidden_size))
        self.c = nn.Parameter(torch.full((num_heads, hidden_size), 2.0))

    def init_parameters(self):
        init.zeros_(self.mean_offset)
        init.constant_(self.c, 2.0)

    def forward(self, x: torch.Tensor, attention_mask=None, return_weights: bool = False):
        batch, layers, hidden = x.shape
        chunks = x.reshape(batch, self.num_heads, layers // self.num_heads, hidden)
        mean = chunks.mean(2, keepdim=True)
        var = chunks.var(2, keepdim=True, unbiased=False)
        y = (chunks - (mean + self.mean_offset[:, None])) / torch.sqrt(var + self.eps)
        gate = torch.exp(-(y**2) / (2.0 * self.c[:, None]))
        out = (chunks * gate).reshape(x.shape)
        return (out, gate.reshape(x.shape)) if return_weights else out


class TorchInitialized:
    """A layer that keeps PyTorch's default initialisation (the authors' code), not transformers' normal(0, 0.02)."""

    def init_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight[0].numel())
        init.uniform_(self.bias, -bound, bound)


class Conv2d(TorchInitialized, nn.Conv2d):
    pass


class Linear(TorchInitialized, nn.Linear):
    pass


class GroupedQueryAttention(nn.Module):
    """Self-attention across the layer axis with fewer key/value heads than query heads (GQDAAM's attention)."""

    def __init__(self, size: int, num_heads: int, num_key_value_heads: int):
        super().__init__()
        self.num_heads, self.num_key_value_heads = num_heads, num_key_value_heads
        self.head_size = size // num_heads
        self.q_proj = Linear(size, size)
        self.k_proj = Linear(size, num_key_value_heads * self.head_size)
        self.v_proj = Linear(size, num_key_value_heads * self.head_size)
        self.o_proj = Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, size = x.shape
        query = self.q_proj(x).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
        key, value = (
            projection(x).view(batch, length, self.num_key_value_heads, self.head_size).transpose(1, 2)
            for projection in (self.k_proj, self.v_proj)
        )
        repeats = self.num_heads // self.num_key_value_heads
        key, value = key.repeat_interleave(repeats, 1), value.repeat_interleave(repeats, 1)
        attended = nn.functional.scaled_dot_product_attention(query, key, value)
        return self.o_proj(attended.transpose(1, 2).reshape(batch, length, size))


def closest_to_square(size: int) -> tuple[int, int]:
    rows = max(r for r in range(1, math.isqrt(size) + 1) if size % r == 0)
    return rows, size // rows


class DaamHead(LayerStatesHead):
    """
    The GAAM authors' head (DAAMv1 with 8 heads, DAAMv2 with 1; GQDAAM with `daam_variant="gqdaam"`): every layer's
    pooled state (the embeddings excluded) through `DaamGate`; GQDAAM then projects to 512 features and runs grouped-
    query attention (8 query, 2 key/value heads) across layers; the features of each layer become a `daam_grid`
    image, `Conv2d(layers, daam_conv_channels, 3)`, ReLU, `Conv2d(daam_conv_channels, layers, 3)`, ReLU, flattened for
    the classifier.
    """

    default_learning_rate = 1e-3
    GQDAAM_SIZE, GQDAAM_HEADS, GQDAAM_KEY_VALUE_HEADS = 512, 8, 2  # the authors' values

    def __init__(self, config, task):
        super().__init__(config, task)
        layers, hidden_size = config.backbone_config.num_hidden_layers, config.backbone_config.hidden_size
        self.gate = DaamGate(self.num_heads(config), hidden_size)
        self.projection = self.attention = None
        size = hidden_size
        if config.daam_variant == "gqdaam":
            size = self.GQDAAM_SIZE
            self.projection = Linear(hidden_size, size)
            self.attention = GroupedQueryAttention(size, self.GQDAAM_HEADS, self.GQDAAM_KEY_VALUE_HEADS)
        self.grid = self.grid_for(config, size)
        self.convolutions = nn.Sequential(
            Conv2d(layers, config.daam_conv_channels, 3, padding=1),
            nn.ReLU(),
            Conv2d(config.daam_conv_channels, layers, 3, padding=1),
            nn.ReLU(),
        )
        self.output_size = layers * size

    @staticmethod
    def num_heads(config) -> int:
        """
        `daam_num_heads`, by default the largest of 8 (the authors'), 4, 2, 1 that splits the backbone's layers into
        equal chunks of at least 2 (over a single layer the variance is 0 and the gate cannot vary).
        """
        if config.daam_num_heads is not None:
            return config.daam_num_heads
        layers = config.backbone_config.num_hidden_layers
        return next(n for n in (8, 4, 2, 1) if layers % n == 0 and layers // n >= 2 or n == 1)

    @staticmethod
    def grid_for(config, size: int) -> tuple[int, int]:
        return tuple(config.daam_grid) if config.daam_grid is not None else closest_to_square(size)

    @classmethod
    def check(cls, config, task=None):
        super().check(config, task)
        layers = config.backbone_config.num_hidden_layers
        heads = cls.num_heads(config)
        if layers % heads or layers // heads < 2:
            fitting = [n for n in range(1, layers // 2 + 1) if layers % n == 0]
            raise head_error(
                config.head_type, "daam_num_heads", heads,
                f"heads split the backbone's {layers} layers into equal chunks of at least 2, so use one of {fitting}",
            )
        size = cls.GQDAAM_SIZE if config.daam_variant == "gqdaam" else config.backbone_config.hidden_size
        grid = cls.grid_for(config, size)
        if len(grid) != 2 or grid[0] * grid[1] != size:
            raise head_error(
                config.head_type, "daam_grid", config.daam_grid,
                f"the grid holds each layer's {size} features, so rows x columns must equal {size} "
                f"(e.g. {list(closest_to_square(size))}, or None for that)",
            )

    def forward(self, layer_states, attention_mask):
        states = self.gate(layer_states[:, 1:])  # the authors read `hidden_states[1:]`: the layers, not embeddings
        if self.attention is not None:
            states = self.attention(self.projection(states))
        image = states.reshape(states.shape[0], states.shape[1], *self.grid)
        return self.convolutions(image).flatten(1)


# Head types by `config.head_type`. "last_token" labels tokens as "linear" does (an alias the token classifier warns
# about): its name says what it reads for a sequence.
HEADS: dict[str, type[Head]] = {
    "attention": AttentionHead,
    "daam": DaamHead,
    "gaam_layers": GaamLayersHead,
    "last_token": LastTokenHead,
    "linear": LinearHead,
    "mean": MeanHead,
    "scalar_mix": ScalarMixHead,
}
TOKEN_ALIASES = {"last_token": "linear"}


def register_head(name: str, head_class: type) -> None:
    """
    Makes `head_class` (a `Head` subclass) the head of `HeadedConfig(head_type=name)`. A saved model carries the
    head's code when the class lives in an importable module file.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name`={name!r} must be an identifier-like string, e.g. 'my_head'.")
    if not (isinstance(head_class, type) and issubclass(head_class, Head)):
        raise TypeError(f"`head_class`={head_class!r} must be a subclass of `hf_heads.Head`.")
    if name in HEADS and HEADS[name] is not head_class:
        if HEADS[name].__module__ == __name__:
            raise ValueError(f"`name`={name!r} is a built-in head; pick another name.")
        previous = HEADS[name].__qualname__
        warnings.warn(f"head_type {name!r} was registered to {previous}; now to {head_class.__qualname__}.")
    HEADS[name] = head_class


def head_class_for(head_type: str, task: str) -> type[Head]:
    """The class serving `head_type` for `task` (token classification maps "last_token" to "linear", warning)."""
    if task == TOKEN and head_type in TOKEN_ALIASES:
        warnings.warn(
            f"head_type={head_type!r} for token classification is deprecated; it means {TOKEN_ALIASES[head_type]!r} "
            "(a linear layer on every token): use that name.",
            FutureWarning,
            stacklevel=3,
        )
        head_type = TOKEN_ALIASES[head_type]
    return HEADS[head_type]
