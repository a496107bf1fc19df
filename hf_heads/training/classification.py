"""
Fine-tune a text classifier with `Trainer`: GPT-2, GAAM-GPT2, or a `headed` model (a head on any backbone).
Single-label, multi-label and regression, from the embedded BBC News corpus, a Hub dataset or local files.
"""

from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    GPT2ForSequenceClassification,
)

import hf_heads
from hf_heads.features import CachedFeaturesCollator, cache_backbone_features
from hf_heads.models.headed.configuration_headed import HEAD_TYPES, HeadedConfig
from hf_heads.models.headed.heads import HEADS
from hf_heads.tokenization import train_bpe_tokenizer

from .arguments import DataArguments, ModelArguments, RecipeTrainingArguments, usage_text
from .data import (
    BBC_NEWS_SPLIT,
    EMBEDDED_DATASETS,
    check_json_label_types,
    check_texts,
    drop_unlabeled_splits,
    load_source,
    select_columns,
)
from .errors import RecipeError, run_from_command_line
from .initialization import initialize_new_weights
from .labels import PROBLEM_TYPES, encode_labels
from .metrics import compute_metrics_for, load_metric, predictions_for
from .recipe import Recipe
from .splits import carve_validation, limit_rows
from .tokenizer import fit_tokenizer_to_model, ready_for_training


MODEL_CLASSES = {"gpt2": GPT2ForSequenceClassification, "gaam_gpt2": hf_heads.GaamGPT2ForSequenceClassification}

# The batch size of a run on cached backbone features unless the user gives one. A step there is a few milliseconds
# of head arithmetic, so at the usual batch of 8 `Trainer`'s own per-step work (optimizer, scheduler, callbacks)
# takes most of an epoch; at 64 an epoch of a `gaam_layers` head processes about 200 times the rows per second of
# the frozen backbone's forward pass at 64 tokens, 4-5 times as many as at 8, with the same test accuracy after the
# same epochs (benchmarks/results/frozen_heads.md).
CACHED_FEATURES_BATCH_SIZE = 64


@dataclass
class ClassifierModelArguments(ModelArguments):
    tokenizer_vocab_size: int = field(default=4000, metadata={"help": "BPE vocabulary when training from scratch."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise checkpoint weights whose shape differs (a head with another label count)."},
    )


@dataclass
class HeadArguments:
    _argument_group_name = "head (and what trains)"

    head_type: str | None = field(
        default=None,
        metadata={"help": f"Put a `headed` head on the --model_name_or_path backbone: one of {HEAD_TYPES}."},
    )
    freeze_backbone: bool = field(
        default=False,
        metadata={"help": "Train the head only (and GAAM's parameters in a GAAM-GPT2 model); the rest stays fixed. "
                  "With --head_type, the learning rate defaults to the head's own (e.g. 1e-2 for gaam_layers)."},
    )
    cache_backbone_features: bool = field(
        default=False,
        metadata={"help": "Run the frozen backbone once and train the head on cached features (held in memory as "
                  f"tensors; batches of {CACHED_FEATURES_BATCH_SIZE} rows unless you set the batch sizes)."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the backbone's attention (0: no LoRA)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated module names for LoRA (default: peft's for the backbone)."}
    )


@dataclass
class ClassifierDataArguments(DataArguments):
    test_file: str | None = field(default=None, metadata={"help": "Test data, same format (final figures only)."})
    label_column: str = field(default="label", metadata={"help": "The column holding the label."})
    problem_type: str = field(
        default="single_label_classification",
        metadata={"help": f"One of {PROBLEM_TYPES}. Multi-label: a list of labels per row (or --label_delimiter); "
                  "regression: a number per row."},
    )
    label_delimiter: str | None = field(
        default=None, metadata={"help": "Multi-label: split each label cell on this string (e.g. '|')."}
    )
    validation_split_percentage: float = field(
        default=10.0,
        metadata={"help": "When the run needs a validation split (evaluation during training, best model, early "
                  "stopping, or data without a test split) and the data has none: the percentage of training rows "
                  "held out for it, stratified by class. The log and the card say so. 0: never carve."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Texts are truncated to this many tokens (not padded); the saved tokenizer "
                               "keeps it as model_max_length."}
    )
    test_split: str | None = field(
        default=None,
        metadata={"help": "A split of a Hub dataset to use as the test split, e.g. validation for GLUE-style datasets "
                  "whose test labels are hidden (a validation split is then held out from train when needed)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use the first N training rows (before any validation split is held out)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N validation and test rows."})


EXAMPLES = """\
  hf-heads-train-classifier --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --head_type gaam_layers \\
      --freeze_backbone true --cache_backbone_features true --dataset_name bbc_news --num_train_epochs 20 \\
      --output_dir runs/probe
  hf-heads-train-classifier --model_type gaam_gpt2 --config_overrides n_layer=2,n_embd=128 \\
      --train_file train.csv --test_file test.csv --label_column topic --output_dir runs/mine
  hf-heads-train-classifier recipes/configs/bbc_news_gaam_gpt2.yaml --num_train_epochs 1 --output_dir runs/quick
  accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/train_classifier.py ..."""

YAML_EXAMPLE = """\
  model_type: gaam_gpt2
  config_overrides: n_layer=2,n_embd=128,n_head=4,classifier_pooling=mean
  train_file: train.csv
  label_column: topic
  output_dir: runs/mine
  num_train_epochs: 4
  learning_rate: 0.001"""


class ClassifierRecipe(Recipe):
    prog = "hf-heads-train-classifier"
    usage = usage_text(
        "Fine-tune a text classifier (single-label, multi-label or regression) with transformers' Trainer: GPT-2, "
        "GAAM-GPT2, or a head on any backbone. The output folder holds the model (with its code, for "
        "trust_remote_code=True), the tokenizer, all_results.json, plots and a model card.",
        EXAMPLES, YAML_EXAMPLE,
    )
    argument_classes = (ClassifierModelArguments, HeadArguments, ClassifierDataArguments, RecipeTrainingArguments)
    search_metrics = ("eval_accuracy", "eval_macro_f1", "eval_micro_f1", "eval_mse", "eval_mae", "eval_pearson_r",
                      "eval_loss")

    @property
    def head_args(self) -> HeadArguments:
        return self.arguments[1]

    # ----- checks before any data is read

    def check_arguments(self) -> None:
        head, data = self.head_args, self.data_args
        if head.head_type is not None:
            if head.head_type not in HEAD_TYPES:
                raise RecipeError(
                    f"`--head_type`={head.head_type!r} is not supported; accepted: {', '.join(HEAD_TYPES)}."
                )
            if self.model_args.model_name_or_path is None:
                raise RecipeError(
                    "`--head_type` puts a head on a pretrained backbone: give `--model_name_or_path` too."
                )
            if self.model_args.model_type is not None:
                raise RecipeError(
                    "`--head_type` keeps the backbone's own architecture; drop "
                    f"`--model_type`={self.model_args.model_type!r}."
                )
        if head.cache_backbone_features and head.head_type is None:
            raise RecipeError("`--cache_backbone_features` applies to `headed` models (`--head_type`).")
        if head.cache_backbone_features and not head.freeze_backbone:
            raise RecipeError(
                "`--cache_backbone_features` needs `--freeze_backbone` (a training backbone's features change)."
            )
        if head.cache_backbone_features and head.lora_r:
            raise RecipeError(
                "`--cache_backbone_features` and `--lora_r` exclude each other: LoRA changes the backbone."
            )
        if head.lora_r < 0:
            raise RecipeError(f"`--lora_r` must be 0 (off) or positive, got {head.lora_r}.")
        if data.problem_type not in PROBLEM_TYPES:
            raise RecipeError(
                f"`--problem_type`={data.problem_type!r} is not supported; accepted: {', '.join(PROBLEM_TYPES)}."
            )
        if data.label_delimiter is not None and data.problem_type != "multi_label_classification":
            raise RecipeError(
                "`--label_delimiter` splits multi-label cells: pass `--problem_type multi_label_classification`."
            )
        if data.text_column == data.label_column:
            raise RecipeError(f"`--text_column` and `--label_column` are both {data.text_column!r}; they must differ.")
        if not 0 <= data.validation_split_percentage < 100:
            raise RecipeError(
                f"`--validation_split_percentage` must be in [0, 100), got {data.validation_split_percentage}."
            )
        if data.max_length < 2:
            raise RecipeError(f"`--max_length` must be at least 2, got {data.max_length}.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(data, name)
            if value is not None and value < 1:
                raise RecipeError(f"`--{name}` must be a positive number of rows (or left out for all), got {value}.")
        super().check_arguments()
        if head.head_type is not None and head.freeze_backbone and "learning_rate" not in self.explicit:
            self.training_args.learning_rate = HEADS[head.head_type].default_learning_rate
            print(f"Learning rate {self.training_args.learning_rate:g}: the {head.head_type!r} head's default on a "
                  "frozen backbone (set --learning_rate to change it).")
        if head.cache_backbone_features:
            self.default_cached_batch_sizes()

    def default_cached_batch_sizes(self) -> None:
        """Batches of `CACHED_FEATURES_BATCH_SIZE` rows, training and evaluation, where the user gave no size."""
        defaulted = [name for name in ("per_device_train_batch_size", "per_device_eval_batch_size")
                     if name not in self.explicit]
        for name in defaulted:
            setattr(self.training_args, name, CACHED_FEATURES_BATCH_SIZE)
        if defaulted:
            self.log(f"Batch size {CACHED_FEATURES_BATCH_SIZE} ({', '.join('--' + name for name in defaulted)}): "
                     "the default on cached backbone features, where a batch of 8 leaves Trainer's per-step "
                     "bookkeeping most of the work (set them to change it).")

    def overridable_fields(self) -> set[str]:
        if self.head_args.head_type is not None:
            return set(HeadedConfig().to_dict())
        return super().overridable_fields()

    def config_for_overrides(self, overrides: dict):
        if self.head_args.head_type is not None:
            return HeadedConfig(head_type=self.head_args.head_type, **overrides)
        return super().config_for_overrides(overrides)

    def fields_set_by_recipe(self) -> dict[str, str]:
        labels = "the data's labels and --problem_type"
        fields = dict(super().fields_set_by_recipe(), num_labels=labels, id2label=labels, label2id=labels,
                      problem_type=labels)
        if self.head_args.head_type is not None:
            fields.update(head_type="--head_type", freeze_backbone="--freeze_backbone",
                          backbone_config="--model_name_or_path")
        return fields

    # ----- data, tokenizer, model

    def data_files(self) -> dict[str, str]:
        data = self.data_args
        return {split: path for split, path in (("train", data.train_file), ("validation", data.validation_file),
                                                ("test", data.test_file)) if path}

    def validation_reason(self, has_test: bool) -> str | None:
        """Why this run needs a validation split, or None when it does not."""
        args = self.training_args
        if getattr(self, "validation_required", None):
            return self.validation_required
        if args.eval_strategy != "no":
            return f"`--eval_strategy {args.eval_strategy.value}` evaluates on it during training"
        if args.load_best_model_at_end or self.model_args.early_stopping_patience:
            return "the best model is picked on it"
        if not has_test:
            return "the data has no test split, so the held-out figures come from it"
        return None

    def load_splits(self):
        data, files = self.data_args, self.data_files() or None
        check_json_label_types(files, data.label_column, data.encoding)
        splits = load_source(data.dataset_name, data.dataset_config_name, files, EMBEDDED_DATASETS, data.encoding)
        if data.dataset_name == "bbc_news":
            self.split_notes.append(f"bbc_news: {BBC_NEWS_SPLIT}; the test split gives the final figures.")
        splits = select_columns(splits, [data.text_column, data.label_column], files,
                                {data.text_column: "text_column", data.label_column: "label_column"})
        splits = drop_unlabeled_splits(splits, data.label_column)
        if data.test_split is not None:
            if data.test_split not in splits or data.test_split == "train":
                raise RecipeError(f"`--test_split`={data.test_split!r} is not a labelled split of the data other than "
                                 f"train; its splits are {list(splits)}.")
            splits = DatasetDict({**{k: v for k, v in splits.items() if k != data.test_split},
                                  "test": splits[data.test_split]})
            self.split_notes.append(f"The source's {data.test_split!r} split is the test split.")
        splits = check_texts(splits, data.text_column, files)
        splits, self.labels = encode_labels(splits, data.label_column, data.problem_type, data.label_delimiter)
        splits = limit_rows(splits, {"train": data.max_train_samples})
        reason = self.validation_reason(has_test="test" in splits)
        if reason and "validation" not in splits:
            splits, note = carve_validation(splits, data.validation_split_percentage, self.training_args.seed, reason,
                                            data.label_column)
            self.split_notes.append(note)
        return limit_rows(splits, {"validation": data.max_eval_samples, "test": data.max_eval_samples})

    def build_tokenizer(self, train_texts):
        model_args = self.model_args
        if model_args.model_name_or_path is not None:
            tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        else:
            tokenizer = train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
        return ready_for_training(tokenizer)

    def prepare(self) -> None:
        data = self.data_args
        splits = self.load_splits()
        self.tokenizer = self.build_tokenizer(splits["train"][data.text_column])
        self.first_model = self.new_model()
        fit_tokenizer_to_model(self.tokenizer, self.first_model, data.max_length)
        with self.training_args.main_process_first(desc="tokenizing"):
            tokenized = splits.map(
                lambda rows: self.tokenizer(rows[data.text_column], truncation=True, max_length=data.max_length),
                batched=True, remove_columns=[data.text_column], desc="Tokenizing",
            )
        if self.head_args.cache_backbone_features:
            # The frozen backbone is the same in every trial of a search, so its features are computed once.
            tokenized = {name: cache_backbone_features(self.first_model, split) for name, split in tokenized.items()}
        self.datasets = dict(tokenized)

    def new_model(self, extra_overrides: dict | None = None):
        """The model, with `--weight_init` applied to the parameters that no checkpoint provided."""
        model_args, head = self.model_args, self.head_args
        overrides = {**self.overrides(), **(extra_overrides or {})}
        labels = self.labels.config_fields()
        if head.head_type is not None:
            model = hf_heads.HeadedModelForSequenceClassification.from_backbone(
                model_args.model_name_or_path, head_type=head.head_type, freeze_backbone=head.freeze_backbone,
                **labels, **overrides,
            )
            new_parameters = {name for name, _ in model.named_parameters() if not name.startswith("backbone.")}
        elif model_args.model_name_or_path is not None:
            # With `--model_type` too, the checkpoint's weights go into that architecture (GPT-2 → GAAM-GPT2).
            model_class = MODEL_CLASSES.get(model_args.model_type, AutoModelForSequenceClassification)
            model, loading = model_class.from_pretrained(
                model_args.model_name_or_path, output_loading_info=True,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **labels, **overrides,
            )
            new_parameters = set(loading["missing_keys"]) | {key[0] for key in loading["mismatched_keys"]}
        else:
            tokenizer = self.tokenizer
            config = AutoConfig.for_model(
                model_args.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, **labels, **overrides,
            )
            model = AutoModelForSequenceClassification.from_config(config)
            new_parameters = None
        initialize_new_weights(model, model_args.weight_init, new_parameters)
        if head.freeze_backbone and head.head_type is None:
            freeze_all_but_head_and_gaam(model)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def trainable(self, model):
        head = self.head_args
        if not head.lora_r:
            return model
        from peft import get_peft_model

        target = head.lora_target_modules.split(",") if head.lora_target_modules else None
        return get_peft_model(model, hf_heads.lora_config_for(model, r=head.lora_r, lora_alpha=head.lora_alpha,
                                                              target_modules=target))

    def data_collator(self):
        if self.head_args.cache_backbone_features:
            return CachedFeaturesCollator()
        return DataCollatorWithPadding(self.tokenizer)

    def compute_metrics(self):
        return compute_metrics_for(self.labels.problem_type)

    # ----- after training

    def evaluate(self, trainer) -> dict:
        """Validation metrics (the split that selected nothing but the best checkpoint), then test metrics."""
        metrics = {}
        self.predictions = None
        if "validation" in self.datasets:
            metrics.update(trainer.evaluate(metric_key_prefix="eval"))
        if "test" in self.datasets:
            self.predictions = trainer.predict(self.datasets["test"], metric_key_prefix="test")
            self.predictions_split = "test"
            metrics.update(self.predictions.metrics)
        elif "validation" in self.datasets:
            self.predictions = trainer.predict(self.datasets["validation"], metric_key_prefix="eval")
            self.predictions_split = "validation"
        return metrics

    def save(self, trainer, metrics: dict) -> None:
        if self.head_args.lora_r:
            # A plain folder loads anywhere; the trainer holds the merged model from now on, so that `push_to_hub`
            # (which saves the trainer's model again) uploads it rather than the adapter.
            trainer.model = trainer.model_wrapped = trainer.model.merge_and_unload()
        super().save(trainer, metrics)

    def save_extras(self, trainer, metrics: dict) -> None:
        from hf_heads.hub import plot_confusion_matrix

        output_dir = Path(self.training_args.output_dir)
        model = trainer.model  # merged into its base when LoRA trained (`save`)
        held_out = self.datasets.get("validation", self.datasets.get("test", self.datasets["train"]))
        self.common_plots(trainer, model, held_out)
        if self.labels.is_single_label and self.predictions is not None:
            logits = self.predictions.predictions
            matrix = load_metric("single_label").compute(
                predictions=predictions_for(self.labels.problem_type,
                                            logits[0] if isinstance(logits, tuple) else logits),
                references=self.predictions.label_ids, confusion_matrix_labels=len(self.labels.names),
            )["confusion_matrix"]
            plot_confusion_matrix(matrix, self.labels.names, output_dir / "confusion_matrix.png",
                                  title=f"{output_dir.name}: confusion matrix ({self.predictions_split})")
        # The card (written next by `Trainer`'s card hook) reports test metrics under "test"; the validation
        # split's come from the trainer's last evaluation.
        self.card.results["test"] = {
            name: metrics[f"test_{name}"] for name in CARD_METRICS if f"test_{name}" in metrics
        }
        if not self.card.results["test"]:
            del self.card.results["test"]


# What the card reports of a split's metrics, by problem type: the figures a reader compares models on.
CARD_METRICS = ("accuracy", "macro_f1", "micro_f1", "mse", "mae", "pearson_r", "loss")


def freeze_all_but_head_and_gaam(model) -> None:
    """GPT-2 / GAAM-GPT2 with a frozen backbone: the task head (`score`) and every GAAM module train, nothing else."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(("score.", "classifier.", "qa_outputs.")) or ".gaam" in name


def main(argv=None) -> dict:
    """`hf-heads-train-classifier` / `recipes/train_classifier.py`: flags, or a YAML/JSON file followed by flags."""
    return ClassifierRecipe.from_argv(argv).run()


def command_line() -> int:
    """The `hf-heads-train-classifier` command: a user mistake prints one `error:` line and exits with status 2."""
    return run_from_command_line(main, ClassifierRecipe.prog)
