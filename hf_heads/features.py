"""Frozen-backbone feature caching: run the backbone once, then train a `headed` model's head for many epochs.

`cache_backbone_features` computes what the head reads (the column named by the head's `feature`, see the `headed`
heads file) and returns it, with the dataset's other columns, as a `CachedFeatures` dataset held in memory as tensors;
the model's `forward` accepts those columns instead of `input_ids`, and `CachedFeaturesCollator` batches them for
`Trainer`. The logits equal those of the uncached model because a frozen backbone runs in eval mode in both.
"""

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers.utils import logging

from .models.headed.modeling_headed import HeadedPreTrainedModel


TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _pad(rows: list[torch.Tensor], value) -> torch.Tensor:
    """Right-pads rows of varying length (first axis) into one tensor; rows of one shape are simply stacked."""
    shape = rows[0].shape
    if all(row.shape == shape for row in rows):
        return torch.stack(rows)
    length = max(row.shape[0] for row in rows)
    padded = rows[0].new_full((len(rows), length) + tuple(shape[1:]), value)
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]] = row
    return padded


def _as_tensor(value) -> torch.Tensor | None:
    """A row's value as a tensor, or None for what is not a number array (text)."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    return torch.from_numpy(array) if array.dtype.kind in "biuf" else None


class CachedFeatures(torch.utils.data.Dataset):
    """
    Rows of cached backbone features, held in memory as tensors: a column whose rows share one shape is one tensor
    (rows on the first axis), a per-token column a list of tensors (each row at its own length), a text column a list.

    Reading a row is indexing, so a training step spends nothing on data but the collator's stack. (An Arrow dataset
    decodes each row's nested lists on every read: a quarter of a millisecond per row of `backbone_layer_states`,
    many times the head's own step.)
    """

    def __init__(self, columns: dict[str, torch.Tensor | list]):
        lengths = {name: len(column) for name, column in columns.items()}
        if not columns or len(set(lengths.values())) > 1:
            raise ValueError(f"`columns` must be one or more columns of equal length, got lengths {lengths}.")
        self.columns = columns

    @classmethod
    def from_dataset(cls, dataset: Dataset, columns: dict[str, torch.Tensor | list] | None = None) -> "CachedFeatures":
        """`dataset`'s columns as tensors (where they hold numbers), plus the given `columns`."""
        converted = {}
        for name in dataset.column_names:
            rows = [_as_tensor(value) for value in dataset[name]]
            if any(row is None for row in rows):
                converted[name] = list(dataset[name])
            elif all(row.shape == rows[0].shape for row in rows):
                converted[name] = torch.stack(rows)
            else:
                converted[name] = rows
        return cls({**converted, **(columns or {})})

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: int) -> dict:
        return {name: column[index] for name, column in self.columns.items()}

    def __iter__(self):
        return (self[index] for index in range(len(self)))

    def select(self, indices) -> "CachedFeatures":
        """The rows at `indices`, in that order (as `datasets.Dataset.select`)."""
        indices = list(indices)
        return CachedFeatures({
            name: column[indices] if isinstance(column, torch.Tensor) else [column[index] for index in indices]
            for name, column in self.columns.items()
        })


def cache_backbone_features(
    model: HeadedPreTrainedModel, dataset: Dataset, batch_size: int = 32, desc: str = "Caching backbone features"
) -> CachedFeatures:
    """
    Runs `model`'s frozen backbone once over a tokenized `dataset` (its `token_type_ids` and `position_ids` too, where
    present) and returns its rows with the token columns replaced by what the head reads: `model.feature_name`, e.g.
    `backbone_layer_states` ("gaam_layers", "scalar_mix", "daam"), `backbone_pooled_states` ("mean"),
    `backbone_last_token_states` ("last_token"), or `backbone_hidden_states` + `attention_mask` ("attention",
    "linear"). Other columns (labels) stay.

    The result is a `CachedFeatures` dataset held in memory as float32 tensors (on the CPU, which `Trainer` moves
    batch by batch). Per-token features are stored at each row's own length, so batches of cached rows pad exactly like
    batches of tokens; use `CachedFeaturesCollator` to batch them.
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
    if len(dataset) == 0:
        raise ValueError("`dataset` has no rows: there are no features to cache.")

    was_training = model.training
    model.eval()
    device = model.device
    per_token = model.feature_is_per_token
    token_columns = [name for name in TOKEN_COLUMNS if name in dataset.column_names]
    tokens = dataset.select_columns(token_columns).with_format(None)
    chunks, masks = [], []
    try:
        for start in logging.tqdm(range(0, len(tokens), batch_size), desc=desc, unit="batch"):
            batch = tokens[start : start + batch_size]
            rows = [torch.as_tensor(ids) for ids in batch["input_ids"]]
            input_ids = _pad(rows, 0).to(device)
            if "attention_mask" in batch:
                attention_mask = _pad([torch.as_tensor(mask) for mask in batch["attention_mask"]], 0).to(device)
            else:
                attention_mask = _pad([torch.ones(len(row), dtype=torch.long) for row in rows], 0).to(device)
            # Right-padded like the rows of a tokenizer's batch; the backbone's other inputs pass as they are.
            extra = {
                name: _pad([torch.as_tensor(row) for row in batch[name]], 0).to(device)
                for name in ("token_type_ids", "position_ids") if name in batch
            }
            with torch.no_grad():
                features = model.backbone_features(input_ids=input_ids, attention_mask=attention_mask, **extra)
            values = features[model.feature_name].float().cpu()
            if per_token:
                # Each row at its own length, copied out of the padded batch so that it does not keep the batch alive.
                chunks.extend(values[i, : len(row)].clone() for i, row in enumerate(rows))
                masks.extend(attention_mask[i, : len(row)].cpu().clone() for i, row in enumerate(rows))
            else:
                chunks.append(values)
    finally:
        model.train(was_training)
    cached = {model.feature_name: chunks if per_token else torch.cat(chunks)}
    if per_token:
        cached["attention_mask"] = masks
    return CachedFeatures.from_dataset(dataset.remove_columns(token_columns).with_format(None), cached)


@dataclass
class CachedFeaturesCollator:
    """
    Batches rows of `cache_backbone_features` (tensors; number arrays and lists are converted): per-token features and
    masks are right-padded to the longest row (the mask keeps padding out of the head), per-token (integer) labels
    padded with `label_pad_token_id`, the rest stacked (float label vectors are multi-label targets). Text columns are
    not model inputs and are left out.
    """

    label_pad_token_id: int = -100

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for name in rows[0]:
            values = [_as_tensor(row[name]) for row in rows]
            if values[0] is None:
                continue
            if name in ("labels", "label"):
                name = "labels"
                if values[0].ndim == 1 and not values[0].is_floating_point():  # one label per token
                    batch[name] = _pad(values, self.label_pad_token_id).long()
                else:  # a class id, a regression target, or a multi-label vector (float)
                    batch[name] = torch.stack(values)
            elif name == "attention_mask":
                batch[name] = _pad(values, 0).long()
            elif values[0].is_floating_point():  # features; per-token ones vary in length
                batch[name] = _pad(values, 0.0).float()
            else:
                batch[name] = torch.stack(values)
        return batch


__all__ = ["CachedFeatures", "CachedFeaturesCollator", "cache_backbone_features"]
