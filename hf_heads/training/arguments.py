"""
The recipes' arguments, as `transformers`' example scripts take them: dataclasses read by `HfArgumentParser`, from
flags, from one YAML/JSON file, or from a file plus flags that override it. Every key is checked: a misspelt flag,
file key or `--config_overrides` field is an error naming the closest valid name.
"""

import difflib
import json
import sys
from argparse import RawDescriptionHelpFormatter
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .initialization import WEIGHT_INIT_SCHEMES


MODEL_TYPES = ("gpt2", "gaam_gpt2")
ARGUMENT_FILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class ModelArguments:
    """The model arguments every recipe takes; each recipe's own class adds its fields."""

    _argument_group_name = "model"

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A checkpoint (Hub id or folder) to start from; or use --model_type."}
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": f"One of {MODEL_TYPES}: from scratch, or the architecture for --model_name_or_path's weights."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated fields of the model's configuration, e.g. n_layer=2,n_embd=128,"
                  "gaam_num_heads=4 (checked against the configuration; fields the recipe sets are refused)."},
    )
    weight_init: str = field(
        default="default",
        metadata={
            "help": f"Initialisation of new weight matrices (not loaded from a checkpoint): {WEIGHT_INIT_SCHEMES}."
        },
    )
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after this many evaluations without improvement (0: off)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into an --output_dir that already holds a model or checkpoints (they are "
                  "replaced); to continue a stopped run, use --resume_from_checkpoint true instead."},
    )
    license: str | None = field(
        default=None, metadata={"help": "The model card's license: a Hub license id, e.g. apache-2.0, mit, cc-by-4.0."}
    )


@dataclass
class DataArguments:
    """Where the data comes from; each recipe's own class adds its fields."""

    _argument_group_name = "data"

    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset, or the embedded bbc_news (offline)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(
        default=None, metadata={"help": "csv / tsv / json / jsonl / parquet / txt training data."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format."})
    text_column: str = field(default="text", metadata={"help": "The column holding the text."})
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of csv / json / txt files."})


class RecipeArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose help shows a usage example and the YAML form, and whose input may be a file + flags."""

    def __init__(self, dataclass_types, prog: str, usage_text: str):
        super().__init__(
            dataclass_types, prog=prog, usage="%(prog)s [ARGUMENTS.yaml|.json] [--name value ...]",
            description=usage_text, formatter_class=RawDescriptionHelpFormatter,
        )

    def field_names(self) -> list[str]:
        return [f.name for dtype in self.dataclass_types for f in fields(dtype) if f.init]

    def parse(self, argv=None):
        """
        (dataclasses..., explicit) from `argv`: flags, or `FILE.yaml|.json [flags]` where the flags override the file.
        `explicit` is the set of argument names the user gave, so recipes can derive what was left to them.
        """
        argv = sys.argv[1:] if argv is None else [str(item) for item in argv]
        file_flags = []
        if argv and argv[0].endswith(ARGUMENT_FILE_SUFFIXES):
            file_flags = self.file_as_flags(argv[0])
            argv = argv[1:]
        flags = file_flags + argv
        # --help is answered by argparse itself (it exits); everything else is checked by name first.
        if any(item in ("-h", "--help") for item in flags):
            self.parse_args(["--help"])
        given = [item[2:].split("=", 1)[0] for item in flags if item.startswith("--")]
        unknown = [name for name in given if name not in self.accepted_flags()]
        if unknown:
            raise ValueError(unknown_names_message("argument", unknown, self.field_names(), "flag"))
        *outputs, remaining = self.parse_args_into_dataclasses(
            args=flags, return_remaining_strings=True, look_for_args_file=False
        )
        if remaining:
            raise ValueError(f"Arguments {remaining} are not `--name value` pairs; see --help.")
        names = [name.replace("-", "_") for name in given]
        explicit = {name.removeprefix("no_") if name.removeprefix("no_") in self.field_names() else name
                    for name in names}
        return (*outputs, explicit)

    def accepted_flags(self) -> set[str]:
        return {option[2:] for action in self._actions for option in action.option_strings if option.startswith("--")}

    def file_as_flags(self, path: str) -> list[str]:
        """A YAML/JSON file of arguments, every key checked, as the flags it stands for."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"arguments file {path!r} does not exist.")
        values = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
        if not isinstance(values, dict):
            raise ValueError(
                f"arguments file {path!r} must map argument names to values, got {type(values).__name__}."
            )
        return self.mapping_as_flags(values, path)

    def mapping_as_flags(self, values: dict, source: str) -> list[str]:
        """A mapping of argument names to values (a YAML file, a search file's `arguments`) as flags; keys checked."""
        unknown = [key for key in values if key not in self.field_names()]
        if unknown:
            raise ValueError(unknown_names_message(f"key in {source}", unknown, self.field_names(), "key"))
        flags = []
        for name, value in values.items():
            if value is None:
                continue
            flags.append(f"--{name}")
            if isinstance(value, list):
                flags += [str(item) for item in value]
            else:
                flags.append(json.dumps(value) if isinstance(value, dict) else str(value))
        return flags


def unknown_names_message(what: str, unknown: list[str], accepted: list[str], noun: str) -> str:
    """'unknown argument --lerning_rate (did you mean --learning_rate?)', one clause per unknown name."""
    dashes = "--" if noun == "flag" else ""
    clauses = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        hint = f" (did you mean {dashes}{close[0]}?)" if close else ""
        clauses.append(f"{dashes}{name}{hint}")
    return f"Unknown {what}: {', '.join(clauses)}. See --help for the accepted names."


def usage_text(summary: str, examples: str, yaml_example: str) -> str:
    return (
        f"{summary}\n\nexamples:\n{examples}\n\nThe same arguments in a YAML (or JSON) file, optionally followed "
        f"by flags that override it:\n\n{yaml_example}\n\n"
        "Every transformers TrainingArguments flag works (see 'training' below)."
    )


@dataclass
class RecipeTrainingArguments(TrainingArguments):
    """`TrainingArguments` under its own heading in `--help`."""

    _argument_group_name = "training (transformers TrainingArguments)"


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


def check_overrides(overrides: dict, accepted: set[str], set_by_recipe: dict[str, str]) -> None:
    """
    Every `--config_overrides` name must be a field of the configuration (`accepted`), and none of those the recipe
    sets itself (`set_by_recipe`: name -> where its value comes from).
    """
    refused = [name for name in overrides if name in set_by_recipe]
    if refused:
        reasons = "; ".join(f"`{name}` comes from {set_by_recipe[name]}" for name in refused)
        raise ValueError(
            f"`--config_overrides` cannot set {', '.join(refused)}: the recipe sets it itself ({reasons})."
        )
    unknown = [name for name in overrides if name not in accepted]
    if unknown:
        raise ValueError(unknown_names_message("`--config_overrides` field", unknown, sorted(accepted), "field"))
