"""Task heads that read a backbone's hidden states; padding always comes from `attention_mask`."""

import torch
from torch import nn

from .gaam_layer import GaussianAdaptiveAttention


def pool_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


def pool_last(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The rightmost real token of each row (left and right padding alike)."""
    positions = torch.arange(attention_mask.shape[-1], device=hidden_states.device)
    last = (positions * attention_mask.to(torch.bool)).argmax(-1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]


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
            normed, normed, normed, key_padding_mask=~attention_mask.to(torch.bool), need_weights=False
        )
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.feed_forward(self.norm_feed_forward(hidden_states)))


class AttentionHead(nn.Module):
    """Self-attention layers over the backbone's last hidden states, then (for sequences) pooling."""

    def __init__(self, hidden_size: int, num_heads: int, num_layers: int, pooling: str, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(SelfAttentionLayer(hidden_size, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.pooling = pooling
        if pooling == "attention":
            self.query = nn.Parameter(torch.zeros(1, 1, hidden_size))
            self.pool_attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)

    def encode(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask)
        return self.norm(hidden_states)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        encoded = self.encode(hidden_states, attention_mask)
        if self.pooling == "mean":
            return pool_mean(encoded, attention_mask)
        if self.pooling == "last":
            return pool_last(encoded, attention_mask)
        query = self.query.expand(encoded.shape[0], -1, -1)
        pooled, _ = self.pool_attention(
            query, encoded, encoded, key_padding_mask=~attention_mask.to(torch.bool), need_weights=False
        )
        return pooled.squeeze(1)


class GaamLayersHead(nn.Module):
    """The GAAM paper's head: per-layer mean-pooled states, GAAM across the layer axis with a residual, averaged."""

    def __init__(self, num_heads: int, num_gaussians: int):
        super().__init__()
        self.gaam = GaussianAdaptiveAttention(num_heads, num_gaussians, norm_axis=1)

    def pool_layers(self, all_hidden_states, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, layers, hidden): each layer's states averaged over real tokens."""
        return torch.stack([pool_mean(states, attention_mask) for states in all_hidden_states], dim=1)

    def forward(self, layer_states: torch.Tensor) -> torch.Tensor:
        return (layer_states + self.gaam(layer_states)).mean(1)
