"""The package's model card, written through `Trainer`'s own card hook so that `push_to_hub` keeps it.

`Trainer.push_to_hub` saves the model, calls `Trainer.create_model_card` (which would write transformers' generic
card over ours) and uploads the output folder, including `training_args.bin`, a pickle. `use_model_card(trainer)`
replaces that hook on one `Trainer`: the card becomes this package's (results per split, pictures, loading
instructions, Hub metadata), the loss curves are drawn from the trainer's log, and `training_args.bin` is replaced by
`training_args.json` before anything is uploaded. Works with any `Trainer` (or subclass), yours or the recipes':

    trainer = Trainer(model=model, args=args, ...)
    card = hf_heads.hub.use_model_card(trainer, dataset_name="ag_news", license="apache-2.0")
    trainer.train()
    card.results["test"] = trainer.evaluate(test_set, metric_key_prefix="test")   # optional: validation is automatic
    trainer.push_to_hub()                  # or trainer.create_model_card() for a local folder
"""

import types
from dataclasses import dataclass, field
from pathlib import Path

from transformers.trainer import TRAINING_ARGS_NAME

from .model_card import build_model_card, check_license
from .plots import plot_loss_curves


# Pictures the package draws into an output folder, in the order the card shows them.
KNOWN_IMAGES = {
    "loss_curves.png": "Loss curves",
    "confusion_matrix.png": "Confusion matrix",
    "gaam_importance.png": "GAAM Importance Factor",
    "search_results.png": "Hyperparameter search",
}
# Trainer arguments a reader of the card needs to reproduce the run.
CARD_TRAINING_ARGUMENTS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "seed",
)
PIPELINE_TAGS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("LMHeadModel", "text-generation"),
    ("ForCausalLM", "text-generation"),
)
# Hub strategies that upload during training, copying `training_args.bin` (and, for the checkpoint strategies,
# optimizer, scheduler and RNG pickles) before the card hook can run.
UPLOAD_DURING_TRAINING = ("every_save", "checkpoint", "all_checkpoints")


@dataclass
class CardSettings:
    """What the card says that `Trainer` does not know; edit it any time before the card is written."""

    dataset_name: str = "unknown"
    license: str | None = None
    base_model: str | None = None
    pipeline_tag: str | None = None  # derived from the model class when None
    splits: dict[str, str] = field(default_factory=dict)  # split name -> what it is
    data_notes: str = ""  # how the splits were made (what was carved, from where)
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metrics; validation filled from logs
    hyperparameters: dict = field(default_factory=dict)
    description: str = ""
    sections: dict[str, str] = field(default_factory=dict)  # title -> markdown, after the pictures (diagnostics)


def check_hub_strategy(args) -> None:
    """Refuses, before training, a push that would upload pickles during training."""
    strategy = getattr(args.hub_strategy, "value", args.hub_strategy)
    if args.push_to_hub and strategy in UPLOAD_DURING_TRAINING:
        raise ValueError(
            f"`--hub_strategy`={strategy!r} uploads the output folder while training, with `training_args.bin` (a "
            "pickle) and, for the checkpoint strategies, the optimizer's state; pass `--hub_strategy end` to upload "
            "the finished model once, with its card and without pickles."
        )


def use_model_card(trainer, **settings) -> CardSettings:
    """
    Makes `trainer.create_model_card()` (which `trainer.push_to_hub()` calls) write this package's card; returns its
    `CardSettings` (fields given here as keywords), which can be changed until the card is written. Raises if the
    trainer's arguments would upload pickles during training (`check_hub_strategy`).
    """
    check_hub_strategy(trainer.args)
    card = CardSettings(**settings)
    check_license(card.license)
    if card.pipeline_tag is None:
        card.pipeline_tag = _pipeline_tag(_inner_model(trainer))  # now: a model without one is refused before training
    trainer.create_model_card = types.MethodType(_hook(card), trainer)
    return card


def _hook(card: CardSettings):
    def create_model_card(trainer, license=None, tags=None, model_name=None, finetuned_from=None, dataset=None, **_):
        """`Trainer.create_model_card`'s signature: `push_to_hub(**kwargs)` may pass any of its arguments."""
        if not trainer.is_world_process_zero():
            return
        write_trainer_card(
            trainer, card, model_name=model_name, license=license, base_model=finetuned_from,
            dataset_name=dataset if isinstance(dataset, str) else None, tags=[tags] if isinstance(tags, str) else tags,
        )

    return create_model_card


def write_trainer_card(trainer, card: CardSettings, model_name=None, license=None, base_model=None,
                       dataset_name=None, tags=None) -> Path:
    """Writes loss curves, `training_args.json` (replacing the pickle) and `README.md` into the output folder."""
    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    inner = _inner_model(trainer)
    config = inner.config
    name = model_name or output_dir.name

    plot_loss_curves(
        trainer.state.log_history, output_dir / "loss_curves.png", title=f"{name}: training and validation loss"
    )
    (output_dir / "training_args.json").write_text(trainer.args.to_json_string())
    (output_dir / TRAINING_ARGS_NAME).unlink(missing_ok=True)

    results = dict(card.results)
    last_evaluation = _last_evaluation(trainer.state.log_history)
    if last_evaluation and "validation" not in results:
        results["validation"] = last_evaluation
    hyperparameters = {key: getattr(trainer.args, key) for key in CARD_TRAINING_ARGUMENTS}
    hyperparameters.update(card.hyperparameters)
    images = {title: file for file, title in KNOWN_IMAGES.items() if (output_dir / file).is_file()}
    model_card = build_model_card(
        model_name=name,
        pipeline_tag=card.pipeline_tag,
        model_type=config.model_type,
        dataset_name=dataset_name or card.dataset_name,
        results=results,
        splits=card.splits,
        hyperparameters=hyperparameters,
        base_model=base_model or card.base_model,
        license=license or card.license,
        images=images,
        remote_code=bool(getattr(config, "auto_map", None)),
        tags=tags,
        description=card.description,
        data_notes=card.data_notes,
        sections=card.sections,
    )
    path = output_dir / "README.md"
    model_card.save(path)
    return path


def _inner_model(trainer):
    """The transformers model the trainer trains, out of its DDP/FSDP and PEFT wrappers."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _last_evaluation(log_history: list[dict]) -> dict[str, float]:
    """The last evaluation `Trainer` logged on its `eval_dataset` (the validation split), without timing entries."""
    for entry in reversed(log_history):
        if "eval_loss" in entry:
            return {
                key.removeprefix("eval_"): value for key, value in entry.items()
                if key.startswith("eval_") and isinstance(value, (int, float)) and not key.endswith(
                    ("_runtime", "_samples_per_second", "_steps_per_second"))
            }
    return {}


def _pipeline_tag(model) -> str:
    name = type(model).__name__
    for suffix, tag in PIPELINE_TAGS:
        if name.endswith(suffix):
            return tag
    raise ValueError(f"No pipeline tag is known for {name}; pass `pipeline_tag=` to `use_model_card`.")


__all__ = ["CardSettings", "check_hub_strategy", "use_model_card", "write_trainer_card"]
