"""Frozen-backbone feature caching: run the backbone once, then train a `headed` model's head for many epochs.

`cache_backbone_features` stores what the head reads (the column named by the head's `feature`, see the `headed`
heads file) as dataset columns; the model's `forward` accepts those columns instead of `input_ids`, and
`CachedFeaturesCollator` batches them for `Trainer`. The logits equal those of the uncached model because a frozen
backbone runs in eval mode in both.
"""

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from .models.headed.modeling_headed import HeadedPreTrainedModel


TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _pad(rows: list, value) -> torch.Tensor:
    """Right-pads rows of varying length (first axis) into one tensor."""
    rows = [torch.as_tensor(row) for row in rows]
    length = max(row.shape[0] for row in rows)
    padded = rows[0].new_full((len(rows), length) + tuple(rows[0].shape[1:]), value)
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]] = row
    return padded


def cache_backbone_features(
    model: HeadedPreTrainedModel, dataset: Dataset, batch_size: int = 32, desc: str = "Caching backbone features"
) -> Dataset:
    """
    Runs `model`'s frozen backbone once over a tokenized `dataset` (its `token_type_ids` and `position_ids` too, where
    present) and returns it with the token columns replaced by what the head reads: `model.feature_name`, e.g.
    `backbone_layer_states` ("gaam_layers", "scalar_mix", "daam"), `backbone_pooled_states` ("mean"),
    `backbone_last_token_states` ("last_token"), or `backbone_hidden_states` + `attention_mask` ("attention",
    "linear"). Other columns (labels) stay.

    Per-token features are stored at each row's own length, so batches of cached rows pad exactly like batches of
    tokens; use `CachedFeaturesCollator` to batch them.
    """
    if not isinstance(model, HeadedPreTrainedModel):
        raise TypeError(f"`model` must be a `headed` model (HeadedModelFor...), got {type(model).__name__}.")
    if not model.config.freeze_backbone:
        raise ValueError(
            "`cache_backbone_features` needs `freeze_backbone=True`: features of a backbone that keeps training go "
            "stale after the first step."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"`dataset` must be tokenized (an `input_ids` column); its columns are {dataset.column_names}.")

    was_training = model.training
    model.eval()
    device = model.device
    per_token = model.feature_is_per_token

    def encode(batch):
        lengths = [len(ids) for ids in batch["input_ids"]]
        input_ids = _pad(batch["input_ids"], 0).to(device)
        if "attention_mask" in batch:
            attention_mask = _pad(batch["attention_mask"], 0).to(device)
        else:
            attention_mask = _pad([[1] * length for length in lengths], 0).to(device)
        # Right-padded like the rows of a tokenizer's batch; the backbone's other inputs pass as they are.
        extra = {name: _pad(batch[name], 0).to(device) for name in ("token_type_ids", "position_ids") if name in batch}
        with torch.no_grad():
            features = model.backbone_features(input_ids=input_ids, attention_mask=attention_mask, **extra)
        values = features[model.feature_name].float().cpu().numpy()
        if not per_token:
            return {model.feature_name: list(values)}
        return {
            model.feature_name: [values[i, :length] for i, length in enumerate(lengths)],
            "attention_mask": [attention_mask[i, :length].cpu().numpy() for i, length in enumerate(lengths)],
        }

    try:
        removed = [column for column in TOKEN_COLUMNS if column in dataset.column_names]
        cached = dataset.map(encode, batched=True, batch_size=batch_size, remove_columns=removed, desc=desc)
    finally:
        model.train(was_training)
    return cached.with_format("numpy")


@dataclass
class CachedFeaturesCollator:
    """
    Batches rows of `cache_backbone_features`: per-token features and masks are right-padded to the longest row (the
    mask keeps padding out of the head), per-token (integer) labels padded with `label_pad_token_id`, the rest
    stacked (float label vectors are multi-label targets).
    """

    label_pad_token_id: int = -100

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for name in rows[0]:
            values = [np.asarray(row[name]) for row in rows]
            if values[0].dtype.kind not in "biuf":
                continue  # text and other raw columns are not model inputs
            if name in ("labels", "label"):
                name = "labels"
                if values[0].ndim == 1 and values[0].dtype.kind in "iu":  # one label per token
                    batch[name] = _pad(values, self.label_pad_token_id).long()
                else:  # a class id, a regression target, or a multi-label vector (float)
                    batch[name] = torch.as_tensor(np.stack(values))
            elif name == "attention_mask":
                batch[name] = _pad(values, 0).long()
            elif values[0].dtype.kind == "f":  # features; per-token ones vary in length
                batch[name] = _pad(values, 0.0).float()
            else:
                batch[name] = torch.as_tensor(np.stack(values))
        return batch


__all__ = ["CachedFeaturesCollator", "cache_backbone_features"]
