"""Frozen-backbone feature caching: cached and uncached heads give the same logits, also through `Trainer`."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, GPT2Config, Trainer, TrainingArguments

from hf_heads import (
    CachedFeaturesCollator,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
    cache_backbone_features,
)
from hf_heads.features import CachedFeatures
from hf_heads.training.classification import CACHED_FEATURES_BATCH_SIZE, ClassifierRecipe


BACKBONES = {
    "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64),
    "bert": BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, type_vocab_size=2,
    ),
}
HEADS = [
    dict(head_type="mean"),
    dict(head_type="last_token"),
    dict(head_type="attention", head_pooling="attention"),
    dict(head_type="gaam_layers", gaam_num_gaussians=3),
    dict(head_type="scalar_mix"),
    dict(head_type="daam", daam_conv_channels=8),
]


def make(backbone="gpt2", model_class=HeadedModelForSequenceClassification, **head):
    torch.manual_seed(0)
    config = HeadedConfig(backbone_config=BACKBONES[backbone].to_dict(), num_labels=3, freeze_backbone=True, **head)
    return model_class(config)


def token_dataset(rows=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (rows,), generator=generator).tolist()
    input_ids = [torch.randint(1, 100, (n,), generator=generator).tolist() for n in lengths]
    labels = torch.randint(0, 3, (rows,), generator=generator).tolist()
    return Dataset.from_dict({"input_ids": input_ids, "label": labels, "text": [str(n) for n in lengths]})


def token_batch(dataset):
    """The same rows as one right-padded batch of tokens."""
    rows = dataset["input_ids"]
    length = max(map(len, rows))
    input_ids = torch.tensor([row + [0] * (length - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows])
    return input_ids, attention_mask


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", HEADS, ids=lambda head: head["head_type"])
def test_cached_features_give_the_same_logits(backbone, head):
    model = make(backbone, **head).eval()
    dataset = token_dataset()
    cached = cache_backbone_features(model, dataset, batch_size=5)
    assert model.feature_name in cached.column_names and "input_ids" not in cached.column_names
    batch = CachedFeaturesCollator()([cached[i] for i in range(len(cached))])
    input_ids, attention_mask = token_batch(dataset)
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits
        got = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_token_classification_accepts_cached_hidden_states():
    model = make(model_class=HeadedModelForTokenClassification, head_type="attention").eval()
    dataset = token_dataset().remove_columns("label")
    dataset = dataset.add_column("labels", [[1] * len(ids) for ids in dataset["input_ids"]])
    cached = cache_backbone_features(model, dataset)
    batch = CachedFeaturesCollator()([cached[i] for i in range(len(cached))])
    input_ids, attention_mask = token_batch(dataset)
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits
        got = model(backbone_hidden_states=batch["backbone_hidden_states"], attention_mask=batch["attention_mask"]).logits
    real = attention_mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-5)
    assert (batch["labels"][~real] == -100).all()


def test_trainer_on_cached_features_matches_training_on_tokens(tmp_path):
    """Head training with cached features and with the frozen backbone in the loop reach the same weights.

    Plain SGD: Adam divides by the root of tiny second moments and turns float rounding into visible differences.
    """
    dataset = token_dataset(rows=16)
    results = {}
    for mode in ("tokens", "cached"):
        model = make(head_type="attention", head_dropout=0.0)
        train = cache_backbone_features(model, dataset) if mode == "cached" else dataset
        args = TrainingArguments(
            output_dir=str(tmp_path / mode), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-2,
            report_to=[], save_strategy="no", use_cpu=True, seed=0, data_seed=0, logging_strategy="no", optim="sgd",
        )
        collator = CachedFeaturesCollator() if mode == "cached" else _TokenCollator()
        Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
        results[mode] = model
    for (name, tokens), cached in zip(results["tokens"].named_parameters(), results["cached"].parameters()):
        torch.testing.assert_close(cached, tokens, rtol=0, atol=1e-5, msg=name)
    assert not torch.equal(results["cached"].classifier.weight, make(head_type="attention").classifier.weight)


class _TokenCollator:
    def __call__(self, rows):
        input_ids, attention_mask = token_batch({"input_ids": [row["input_ids"] for row in rows]})
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([r["label"] for r in rows])}


def test_frozen_backbone_keeps_dropout_off_in_training():
    model = make(head_type="mean").train()
    assert model.training and model.classifier.training and not model.backbone.training


def test_caching_refuses_a_backbone_that_trains():
    model = HeadedModelForSequenceClassification(HeadedConfig(backbone_config=BACKBONES["gpt2"].to_dict()))
    with pytest.raises(ValueError, match="freeze_backbone=True"):
        cache_backbone_features(model, token_dataset())


def test_caching_names_the_columns_of_an_untokenized_dataset():
    with pytest.raises(ValueError, match=r"input_ids.*\['text'\]"):
        cache_backbone_features(make(head_type="mean"), Dataset.from_dict({"text": ["a", "b"]}))


@pytest.mark.parametrize(
    "head, features, message",
    [
        (dict(head_type="gaam_layers"), {"backbone_layer_states": torch.zeros(2, 4, 32)}, r"\(2, 4, 32\).*\(batch, 3, 32\)"),
        (dict(head_type="mean"), {"backbone_pooled_states": torch.zeros(2, 16)}, r"\(2, 16\).*\(batch, 32\)"),
        (dict(head_type="mean"), {"backbone_layer_states": torch.zeros(2, 3, 32)}, "reads the cached column `backbone_pooled_states`"),
        (dict(head_type="attention"), {"backbone_hidden_states": torch.zeros(2, 32)}, r"\(batch, any, 32\)"),
    ],
)
def test_cached_features_that_do_not_fit_the_head_are_refused(head, features, message):
    with pytest.raises(ValueError, match=message):
        make(**head)(**features)


def test_tokens_and_cached_features_together_are_refused():
    with pytest.raises(ValueError, match="pass one or the other"):
        make(head_type="mean")(input_ids=torch.ones(1, 3, dtype=torch.long), backbone_pooled_states=torch.zeros(1, 32))


def test_caching_passes_segment_ids_to_the_backbone():
    model = make("bert", head_type="mean").eval()
    dataset = token_dataset()
    dataset = dataset.add_column("token_type_ids", [[0] * (len(ids) // 2) + [1] * (len(ids) - len(ids) // 2)
                                                    for ids in dataset["input_ids"]])
    cached = cache_backbone_features(model, dataset)
    batch = CachedFeaturesCollator()([cached[i] for i in range(len(cached))])
    input_ids, attention_mask = token_batch(dataset)
    token_type_ids = torch.tensor([row + [0] * (input_ids.shape[1] - len(row)) for row in dataset["token_type_ids"]])
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        without = model(input_ids=input_ids, attention_mask=attention_mask).logits
        got = model(backbone_pooled_states=batch["backbone_pooled_states"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(got, without)


def test_collator_keeps_multi_label_targets_as_float_vectors():
    rows = [{"backbone_pooled_states": np.zeros(4, dtype=np.float32), "labels": np.array([1.0, 0.0, 1.0])},
            {"backbone_pooled_states": np.ones(4, dtype=np.float32), "labels": np.array([0.0, 1.0, 0.0])}]
    batch = CachedFeaturesCollator()(rows)
    assert batch["labels"].dtype == torch.float64 and batch["labels"].tolist() == [[1, 0, 1], [0, 1, 0]]


def test_cached_rows_are_held_as_tensors():
    """Features of one shape per row are one tensor; per-token ones a tensor per row at its own length."""
    dataset = token_dataset()
    layers = cache_backbone_features(make(head_type="gaam_layers", gaam_num_gaussians=3), dataset, batch_size=5)
    assert isinstance(layers, CachedFeatures) and len(layers) == len(dataset)
    column = layers.columns["backbone_layer_states"]
    assert isinstance(column, torch.Tensor) and column.dtype == torch.float32 and column.shape == (len(dataset), 3, 32)
    assert layers.columns["label"].tolist() == dataset["label"] and layers.columns["text"] == dataset["text"]

    per_token = cache_backbone_features(make(head_type="attention"), dataset, batch_size=5)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    assert [tuple(row.shape) for row in per_token.columns["backbone_hidden_states"]] == [(n, 32) for n in lengths]
    assert [row.tolist() for row in per_token.columns["attention_mask"]] == [[1] * n for n in lengths]
    row = per_token[3]
    assert all(isinstance(row[name], torch.Tensor) for name in ("backbone_hidden_states", "attention_mask", "label"))


def test_collator_stacks_cached_rows_and_leaves_text_out():
    dataset = token_dataset()
    cached = cache_backbone_features(make(head_type="gaam_layers", gaam_num_gaussians=3), dataset)
    picked = [4, 0, 7]
    batch = CachedFeaturesCollator()([cached[i] for i in picked])
    assert set(batch) == {"backbone_layer_states", "labels"}
    expected = torch.stack([cached.columns["backbone_layer_states"][i] for i in picked])
    assert torch.equal(batch["backbone_layer_states"], expected)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [dataset["label"][i] for i in picked]


def test_selected_cached_rows_batch_like_the_same_rows_of_the_whole():
    dataset = token_dataset()
    cached = cache_backbone_features(make(head_type="attention"), dataset)
    picked = [9, 2, 5]
    subset = cached.select(picked)
    assert len(subset) == 3 and [row["text"] for row in subset] == [dataset["text"][i] for i in picked]
    whole, part = CachedFeaturesCollator()([cached[i] for i in picked]), CachedFeaturesCollator()(list(subset))
    assert part.keys() == whole.keys() and all(torch.equal(part[name], whole[name]) for name in whole)


def test_caching_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match="no rows"):
        cache_backbone_features(make(head_type="mean"), token_dataset().select([]))


def test_cached_columns_must_have_one_length():
    with pytest.raises(ValueError, match=r"equal length.*'features': 2, 'labels': 3"):
        CachedFeatures({"features": torch.zeros(2, 4), "labels": [0, 1, 2]})


@pytest.mark.parametrize(
    "flags, train_batch, eval_batch",
    [
        (["--cache_backbone_features", "true"], CACHED_FEATURES_BATCH_SIZE, CACHED_FEATURES_BATCH_SIZE),
        (["--cache_backbone_features", "true", "--per_device_train_batch_size", "16"], 16, CACHED_FEATURES_BATCH_SIZE),
        ([], 8, 8),  # the backbone runs every step: Trainer's default
    ],
)
def test_recipe_batch_size_on_cached_features(tmp_path, capsys, flags, train_batch, eval_batch):
    recipe = ClassifierRecipe.from_argv([
        "--model_name_or_path", str(tmp_path / "backbone"), "--head_type", "gaam_layers", "--freeze_backbone", "true",
        "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out"), *flags,
    ])
    recipe.check_arguments()
    args = recipe.training_args
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (train_batch, eval_batch)
    log = capsys.readouterr().out
    assert ("cached backbone features" in log) == bool(flags)
    assert ("--per_device_train_batch_size" in log) == (flags == ["--cache_backbone_features", "true"])
