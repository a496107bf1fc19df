"""Fine-tune a text classifier with `Trainer`: GPT-2, GAAM-GPT2 or a `headed` model on any backbone.

    python recipes/train_classifier.py --model_type gaam_gpt2 --config_overrides n_layer=2,n_embd=128 \
        --dataset_name bbc_news --output_dir runs/bbc --num_train_epochs 3
    python recipes/train_classifier.py recipes/configs/bbc_news_gaam_gpt2.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/train_classifier.py ...

Arguments follow `transformers`' example scripts (see `--help`); every `TrainingArguments` flag works. One YAML or
JSON file of the same arguments may replace the flags. The output folder is ready for the Hub: safetensors weights,
config with `auto_map` and the modelling code (`trust_remote_code=True`), tokenizer, `all_results.json`, loss curves,
confusion matrix, GAAM Importance Factor heatmap (GAAM models) and a model card.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.metrics import confusion_matrix
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    GPT2ForSequenceClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)

import hf_heads
from hf_heads import CachedFeaturesCollator, HeadedModelForSequenceClassification, cache_backbone_features
from hf_heads.hub import plot_confusion_matrix, plot_loss_curves, write_model_card
from hf_heads.models.headed.configuration_headed import HEAD_TYPES
from hf_heads.tokenization import train_bpe_tokenizer
from hf_heads.training.data import load_text_classification, split_stratified
from hf_heads.training.initialization import initialize_new_weights
from hf_heads.training.metrics import classification_metrics
from hf_heads.training.recipe import (
    RecipeModelArguments,
    check_model_arguments,
    card_hyperparameters,
    first_batches,
    parse_overrides,
    parse_recipe_arguments,
    trainable_parameters_line,
)


MODEL_CLASSES = {"gpt2": GPT2ForSequenceClassification, "gaam_gpt2": hf_heads.GaamGPT2ForSequenceClassification}


@dataclass
class ModelArguments(RecipeModelArguments):
    head_type: str | None = field(
        default=None,
        metadata={"help": f"Put a `headed` head on the --model_name_or_path backbone: one of {HEAD_TYPES}."},
    )
    freeze_backbone: bool = field(
        default=False,
        metadata={"help": "Train the head only (and GAAM's parameters in a GAAM-GPT2 model); the rest stays fixed."},
    )
    cache_backbone_features: bool = field(
        default=False, metadata={"help": "Run the frozen backbone once and train the head on cached features."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the backbone's attention (0: no LoRA)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated module names for LoRA (default: peft's for the backbone)."}
    )
    tokenizer_vocab_size: int = field(default=4000, metadata={"help": "BPE vocabulary when training from scratch."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise checkpoint weights whose shape differs (a head with another label count)."},
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset, or an embedded one: bbc_news (offline)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "csv/json/jsonl/parquet training data."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, same format."})
    text_column: str = field(default="text", metadata={"help": "The column holding the text."})
    label_column: str = field(default="label", metadata={"help": "The column holding the label."})
    validation_split_percentage: float = field(
        default=0.0,
        metadata={"help": "Without a validation split: hold out this % of training rows (stratified) for evaluation and "
                  "model selection, so the test split is only used for the final figure (0: evaluate on test)."},
    )
    max_length: int = field(default=128, metadata={"help": "Texts are truncated to this many tokens (not padded)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N test/validation rows."})


def parse_arguments(argv=None):
    return parse_recipe_arguments((ModelArguments, DataArguments, TrainingArguments), argv)


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Every mistake found here is reported before any data is read or model built."""
    check_model_arguments(model_args, training_args)
    if model_args.head_type is not None:
        if model_args.head_type not in HEAD_TYPES:
            raise ValueError(f"`--head_type`={model_args.head_type!r} is not supported; accepted: {', '.join(HEAD_TYPES)}.")
        if model_args.model_name_or_path is None:
            raise ValueError("`--head_type` puts a head on a pretrained backbone: give `--model_name_or_path` too.")
        if model_args.model_type is not None:
            raise ValueError(
                f"`--head_type` keeps the backbone's own architecture; drop `--model_type`={model_args.model_type!r}."
            )
    if model_args.cache_backbone_features and model_args.head_type is None:
        raise ValueError("`--cache_backbone_features` applies to `headed` models (`--head_type`).")
    if model_args.cache_backbone_features and not model_args.freeze_backbone:
        raise ValueError("`--cache_backbone_features` needs `--freeze_backbone` (a training backbone's features change).")
    if model_args.cache_backbone_features and model_args.lora_r:
        raise ValueError("`--cache_backbone_features` and `--lora_r` exclude each other: LoRA changes the backbone.")
    if model_args.lora_r < 0:
        raise ValueError(f"`--lora_r` must be 0 (off) or positive, got {model_args.lora_r}.")
    if not 0 <= data_args.validation_split_percentage < 100:
        raise ValueError(
            f"`--validation_split_percentage` must be in [0, 100), got {data_args.validation_split_percentage}."
        )
    if data_args.max_length < 2:
        raise ValueError(f"`--max_length` must be at least 2, got {data_args.max_length}.")
    has_files = any((data_args.train_file, data_args.validation_file, data_args.test_file))
    if (data_args.dataset_name is None) == (not has_files):
        raise ValueError("Give either `--dataset_name` or `--train_file` (+ `--validation_file`/`--test_file`).")
    if has_files and data_args.train_file is None:
        raise ValueError("`--validation_file`/`--test_file` need a `--train_file`.")


def label_maps(names: list[str]) -> dict:
    return dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def build_tokenizer(model_args, train_texts):
    if model_args.model_name_or_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    else:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:
        # GPT-2 tokenizers have no padding token; padding positions are masked, so any token serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(model_args, tokenizer, names: list[str]):
    """The model, with `--weight_init` applied to the parameters that no checkpoint provided."""
    overrides = parse_overrides(model_args.config_overrides)
    labels = label_maps(names)
    if model_args.head_type is not None:
        model = HeadedModelForSequenceClassification.from_backbone(
            model_args.model_name_or_path, head_type=model_args.head_type, freeze_backbone=model_args.freeze_backbone,
            **labels, **overrides,
        )
        new_parameters = {name for name, _ in model.named_parameters() if not name.startswith("backbone.")}
    elif model_args.model_name_or_path is not None:
        # With `--model_type` too, the checkpoint's weights go into that architecture (GPT-2 → GAAM-GPT2).
        model_class = AutoModelForSequenceClassification if model_args.model_type is None else MODEL_CLASSES[model_args.model_type]
        model, loading = model_class.from_pretrained(
            model_args.model_name_or_path, output_loading_info=True,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **labels, **overrides
        )
        new_parameters = set(loading["missing_keys"]) | {key[0] for key in loading["mismatched_keys"]}
    else:
        config = AutoConfig.for_model(
            model_args.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, **labels, **overrides,
        )
        model = AutoModelForSequenceClassification.from_config(config)
        new_parameters = None
    initialize_new_weights(model, model_args.weight_init, new_parameters)
    if model_args.freeze_backbone and model_args.head_type is None:
        freeze_all_but_head_and_gaam(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def freeze_all_but_head_and_gaam(model) -> None:
    """GPT-2 / GAAM-GPT2 with a frozen backbone: the task head (`score`) and every GAAM module train, nothing else."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(("score.", "classifier.", "qa_outputs.")) or ".gaam" in name


def apply_lora(model, model_args):
    from peft import get_peft_model

    target = model_args.lora_target_modules.split(",") if model_args.lora_target_modules else None
    config = hf_heads.lora_config_for(model, r=model_args.lora_r, lora_alpha=model_args.lora_alpha, target_modules=target)
    return get_peft_model(model, config)


def check_max_length(model, max_length: int) -> None:
    config = model.config.backbone_config if hasattr(model.config, "backbone_config") else model.config
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ValueError(f"`--max_length`={max_length} exceeds the model's {positions} positions.")


def save_outputs(trainer, model, tokenizer, model_args, data_args, training_args, names, metrics, predictions):
    output_dir = Path(training_args.output_dir)
    if model_args.lora_r:
        model = model.merge_and_unload()  # a plain model folder loads anywhere; the adapter alone needs peft
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "all_results.json").write_text(json.dumps(metrics, indent=2))
    images = {"Loss curves": "loss_curves.png", "Confusion matrix": "confusion_matrix.png"}
    plot_loss_curves(trainer.state.log_history, output_dir / "loss_curves.png")
    matrix = confusion_matrix(predictions.label_ids, predictions.predictions.argmax(-1), labels=range(len(names)))
    plot_confusion_matrix(matrix, names, output_dir / "confusion_matrix.png")
    if any(isinstance(m, hf_heads.GaussianAdaptiveAttention) for m in model.modules()):
        factors = hf_heads.importance_factors(model, first_batches(trainer.get_eval_dataloader()))
        hf_heads.plot_importance(factors, output_dir / "gaam_importance.png")
        images["GAAM Importance Factor"] = "gaam_importance.png"
    hyperparameters = card_hyperparameters(training_args, model_args, data_args)
    write_model_card(
        output_dir,
        model_name=output_dir.name,
        pipeline_tag="text-classification",
        model_type=model.config.model_type,
        dataset_name=data_args.dataset_name or Path(data_args.train_file).name,
        metrics={"accuracy": metrics["test_accuracy"], "f1": metrics["test_macro_f1"]},
        hyperparameters=hyperparameters,
        base_model=model_args.model_name_or_path,
        images=images,
    )


@dataclass
class PreparedData:
    """What every trial of a run shares: tokenizer, label names, datasets ready for `Trainer`, the collator."""

    tokenizer: object
    names: list[str]
    datasets: dict
    collator: object
    first_model: object  # built while preparing (feature caching and the length check need one)


def prepare(model_args, data_args, training_args) -> PreparedData:
    """Data, tokenizer and a first model; every check that needs the data or the model runs here, before training."""
    data_files = {
        split: path
        for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                            ("test", data_args.test_file))
        if path
    }
    splits = load_text_classification(
        data_args.dataset_name, data_args.dataset_config_name, data_files or None, data_args.text_column,
        data_args.label_column, seed=training_args.seed,
    )
    if "validation" not in splits and data_args.validation_split_percentage:
        held_out = split_stratified(
            splits["train"], data_args.validation_split_percentage / 100, training_args.seed, data_args.label_column
        )
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
    for name, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                        ("test", data_args.max_eval_samples)):
        if limit is not None and name in splits:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    names = splits["train"].features[data_args.label_column].names

    tokenizer = build_tokenizer(model_args, splits["train"][data_args.text_column])
    model = build_model(model_args, tokenizer, names)
    check_max_length(model, data_args.max_length)
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = splits.map(
            lambda rows: tokenizer(rows[data_args.text_column], truncation=True, max_length=data_args.max_length),
            batched=True, remove_columns=[data_args.text_column], desc="Tokenizing",
        ).rename_column(data_args.label_column, "labels")
    collator = DataCollatorWithPadding(tokenizer)
    if model_args.cache_backbone_features:
        # The frozen backbone is the same in every trial of a search, so its features are computed once.
        tokenized = type(tokenized)({name: cache_backbone_features(model, split) for name, split in tokenized.items()})
        collator = CachedFeaturesCollator()
    return PreparedData(tokenizer, names, dict(tokenized), collator, model)


def new_model(model_args, prepared: PreparedData):
    """A fresh model for a run or a search trial (`model_args.config_overrides` may carry the trial's values)."""
    model = build_model(model_args, prepared.tokenizer, prepared.names)
    return apply_lora(model, model_args) if model_args.lora_r else model


def new_trainer(model_args, training_args, prepared: PreparedData, model=None, model_init=None) -> Trainer:
    callbacks = []
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    datasets = prepared.datasets
    return Trainer(
        model=model, model_init=model_init, args=training_args, train_dataset=datasets["train"],
        eval_dataset=datasets["validation"] if "validation" in datasets else datasets["test"],
        data_collator=prepared.collator, processing_class=prepared.tokenizer, compute_metrics=classification_metrics,
        callbacks=callbacks,
    )


SEARCH_METRICS = ("eval_accuracy", "eval_macro_f1", "eval_loss")  # first: the default


def main(argv=None):
    model_args, data_args, training_args = parse_arguments(argv)
    check_arguments(model_args, data_args, training_args)
    set_seed(training_args.seed)
    prepared = prepare(model_args, data_args, training_args)
    model = apply_lora(prepared.first_model, model_args) if model_args.lora_r else prepared.first_model
    print(trainable_parameters_line(model, training_args))

    trainer = new_trainer(model_args, training_args, prepared, model=model)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {f"train_{k}" if not k.startswith("train_") else k: v for k, v in train_result.metrics.items()}
    predictions = trainer.predict(prepared.datasets["test"], metric_key_prefix="test")
    metrics.update(predictions.metrics)
    if "validation" in prepared.datasets:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if trainer.is_world_process_zero():
        save_outputs(
            trainer, model, prepared.tokenizer, model_args, data_args, training_args, prepared.names, metrics,
            predictions,
        )
        print(json.dumps(metrics, indent=2))
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


if __name__ == "__main__":
    main()
