"""Pieces every recipe shares: arguments from flags or one YAML/JSON file, config overrides, output-folder safety."""

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from .initialization import WEIGHT_INIT_SCHEMES


SAVED_MODEL_FILES = ("config.json", "model.safetensors", "adapter_config.json")
MODEL_TYPES = ("gpt2", "gaam_gpt2")


@dataclass
class RecipeModelArguments:
    """The model arguments every recipe takes; each recipe's `ModelArguments` adds its own."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A checkpoint (Hub id or folder) to start from; or use --model_type."}
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": f"One of {MODEL_TYPES}: from scratch, or the architecture for --model_name_or_path's weights."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config fields, e.g. n_layer=2,n_embd=128,gaam_num_heads=4"},
    )
    weight_init: str = field(
        default="default",
        metadata={"help": f"Initialisation of new weight matrices (not loaded from a checkpoint): {WEIGHT_INIT_SCHEMES}."},
    )
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after this many evaluations without improvement (0: off)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an --output_dir that already holds a model."}
    )


def check_model_arguments(model_args: RecipeModelArguments, training_args) -> None:
    """The checks every recipe shares; run before any data is read. Resolves `--resume_from_checkpoint true`."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        # Found now rather than when the output folder is written, after training.
        raise ImportError("The recipes draw loss curves and heatmaps with matplotlib: `pip install hf-heads[plots]`.")
    if model_args.model_name_or_path is None and model_args.model_type is None:
        raise ValueError(
            "Give `--model_name_or_path` (a checkpoint), `--model_type` (from scratch), or both (the checkpoint's "
            "weights in that architecture, e.g. a GPT-2 checkpoint as `gaam_gpt2`)."
        )
    if model_args.model_type is not None and model_args.model_type not in MODEL_TYPES:
        raise ValueError(f"`--model_type`={model_args.model_type!r} is not supported; accepted: {', '.join(MODEL_TYPES)}.")
    if model_args.weight_init not in WEIGHT_INIT_SCHEMES:
        raise ValueError(
            f"`--weight_init`={model_args.weight_init!r} is not supported; accepted: {', '.join(WEIGHT_INIT_SCHEMES)}."
        )
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    refuse_existing_model(
        training_args.output_dir, model_args.overwrite_output_dir, training_args.resume_from_checkpoint is not None
    )


def parse_recipe_arguments(dataclass_types, argv=None):
    """Flags as `transformers`' example scripts take them, or one `.yaml`/`.yml`/`.json` file of the same arguments."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        path = Path(argv[0]).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"arguments file {argv[0]!r} does not exist.")
        if argv[0].endswith(".json"):
            return parser.parse_json_file(path, allow_extra_keys=False)
        return parser.parse_yaml_file(path, allow_extra_keys=False)
    return parser.parse_args_into_dataclasses(args=argv)


def parse_overrides(text: str | None) -> dict:
    """`a=1,b=x,c=[1,2]` as a dict, values read as JSON where they parse (numbers, booleans, lists)."""
    overrides = {}
    for item in filter(None, split_top_level(text or "")):
        if "=" not in item:
            raise ValueError(f"`--config_overrides` item {item!r} is not `name=value`.")
        name, value = item.split("=", 1)
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value
    return overrides


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so `gaam_layers=[0,1],n_layer=2` keeps its list."""
    items, depth, current = [], 0, ""
    for character in text:
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    return items + [current]


def refuse_existing_model(output_dir, overwrite: bool, resuming: bool) -> None:
    """A folder that already holds a model is never written over unless the user says so."""
    output_dir = Path(output_dir)
    saved = [name for name in SAVED_MODEL_FILES if (output_dir / name).exists()]
    if saved and not overwrite and not resuming:
        raise ValueError(
            f"`--output_dir` {output_dir} already holds a model ({', '.join(saved)}); choose another folder, or pass "
            "`--overwrite_output_dir` to replace it (or `--resume_from_checkpoint` to continue)."
        )


def trainable_parameters_line(model, training_args) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"Process {training_args.process_index + 1} of {training_args.world_size}: trainable parameters {trainable:,} "
        f"of {sum(p.numel() for p in model.parameters()):,}"
    )


def card_hyperparameters(training_args, *argument_dataclasses) -> dict:
    """The arguments a reader of the model card needs: what was set, plus the main `TrainingArguments`."""
    chosen = {}
    for arguments in argument_dataclasses:
        chosen.update({key: value for key, value in asdict(arguments).items() if value not in (None, False)})
    for name in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "max_grad_norm", "seed"):
        chosen[name] = getattr(training_args, name)
    return chosen


def first_batches(dataloader, limit: int = 8):
    """At most `limit` batches of `dataloader` (the Importance Factor needs a sample, not a full pass)."""
    for index, batch in enumerate(dataloader):
        if index == limit:
            break
        yield batch


def resolve_resume_checkpoint(value: str | None, output_dir) -> str | None:
    """
    `--resume_from_checkpoint`: a checkpoint folder, or `true`/`last` for the newest *complete* checkpoint in
    `output_dir` (one whose `trainer_state.json` was written: a run killed while saving leaves a partial folder).
    Checked before any data is read.
    """
    if value is None:
        return None
    if value.lower() in ("true", "last"):
        complete = [
            path for path in Path(output_dir).glob("checkpoint-*")
            if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
        ]
        if not complete:
            raise ValueError(
                f"`--resume_from_checkpoint`={value!r}: `--output_dir` {output_dir} holds no complete checkpoint "
                "(checkpoint-N with trainer_state.json)."
            )
        return str(max(complete, key=lambda path: int(path.name.split("-")[-1])))
    if not (Path(value) / "trainer_state.json").is_file():
        raise ValueError(
            f"`--resume_from_checkpoint`={value!r} is not a complete checkpoint folder (no trainer_state.json); give "
            "a checkpoint-N folder, or `true` for the newest one in `--output_dir`."
        )
    return value
