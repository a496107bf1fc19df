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
from huggingface_hub.errors import StrictDataclassError
from transformers import HfArgumentParser, TrainingArguments

from .errors import MissingFileError, RecipeError
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
            raise RecipeError(unknown_names_message("argument", unknown, self.field_names(), "flag"))
        try:
            *outputs, remaining = self.parse_args_into_dataclasses(
                args=flags, return_remaining_strings=True, look_for_args_file=False
            )
        except ValueError as error:  # `TrainingArguments` refusing a combination of the given values
            raise RecipeError(f"The arguments do not fit together: {error}") from None
        if remaining:
            raise RecipeError(f"Arguments {remaining} are not `--name value` pairs; see --help.")
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
            raise MissingFileError(f"arguments file {path!r} does not exist.")
        values = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
        if not isinstance(values, dict):
            raise RecipeError(
                f"arguments file {path!r} must map argument names to values, got {type(values).__name__}."
            )
        return self.mapping_as_flags(values, path)

    def mapping_as_flags(self, values: dict, source: str) -> list[str]:
        """A mapping of argument names to values (a YAML file, a search file's `arguments`) as flags; keys checked."""
        unknown = [key for key in values if key not in self.field_names()]
        if unknown:
            raise RecipeError(unknown_names_message(f"key in {source}", unknown, self.field_names(), "key"))
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
    items = list(filter(None, split_top_level(text or "")))
    malformed = [item for item in items if "=" not in item]
    if malformed:
        verb = "is" if len(malformed) == 1 else "are"
        raise RecipeError(
            f"`--config_overrides` {', '.join(map(repr, malformed))} {verb} not `name=value` (entries are separated by "
            "commas, e.g. n_layer=2,n_embd=128)."
        )
    overrides = {}
    for item in items:
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


def check_overrides(overrides: dict, accepted: set[str], set_by_recipe: dict[str, str], build_config) -> None:
    """
    Every `--config_overrides` entry, checked before any data is read, and every wrong one reported in one error: a
    name that is not a field of the configuration (`accepted`), one the recipe sets itself (`set_by_recipe`: name ->
    where its value comes from), a value the configuration refuses (`build_config(overrides)` builds it), and an
    attention shape that would only fail when the model is built.
    """
    problems, valid = [], {}
    for name, value in overrides.items():
        if name in set_by_recipe:
            problems.append(f"{name}={value!r}: the recipe sets it itself (it comes from {set_by_recipe[name]})")
        elif name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "no field has a similar name"
            problems.append(f"{name}={value!r}: not a field of the model's configuration ({hint})")
        else:
            # One entry at a time, so that each wrong value is named, not only the first one the configuration meets.
            problem = config_refusal(build_config, {name: value})
            if problem is None:
                valid[name] = value
            else:
                problems.append(f"{name}={value!r}: {problem}")
    # What is wrong only in combination, among the entries that are right on their own.
    problem = config_refusal(build_config, valid)
    if problem is not None:
        problems.append(f"together: {problem}")
    else:
        problems += attention_shape_problems(build_config(valid), valid)
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        entries = "entry" if len(problems) == 1 else "entries"
        raise RecipeError(f"`--config_overrides` has {len(problems)} wrong {entries}:{listed}")


def config_refusal(build_config, overrides: dict) -> str | None:
    """Why the configuration refuses `overrides` (its own message, on one line), or None when it takes them."""
    try:
        build_config(overrides)
    except (StrictDataclassError, TypeError, ValueError) as error:
        return " ".join(str(error).split())
    return None


def attention_shape_problems(config, overrides: dict) -> list[str]:
    """
    GPT-2's attention splits `n_embd` features into `n_head` heads of equal size; transformers checks it only when the
    model is built. Named here with the values that fit, when an override set either of them.
    """
    if not {"n_embd", "n_head"} & set(overrides) or not hasattr(config, "n_embd") or not hasattr(config, "n_head"):
        return []
    n_embd, n_head = config.n_embd, config.n_head
    given = {name: f"{name}={getattr(config, name)}" + ("" if name in overrides else " (not overridden)")
             for name in ("n_embd", "n_head")}
    if not (isinstance(n_head, int) and n_head > 0):
        return [f"{given['n_head']}: the number of attention heads must be a positive integer"]
    if not (isinstance(n_embd, int) and n_embd > 0) or n_embd % n_head == 0:
        return []
    divisors = [heads for heads in range(1, n_embd + 1) if n_embd % heads == 0]
    nearest_heads = sorted({max((d for d in divisors if d < n_head), default=None),
                            min((d for d in divisors if d > n_head), default=None)} - {None})
    widths = sorted({n_embd // n_head * n_head, (n_embd // n_head + 1) * n_head} - {0})
    return [
        f"{given['n_embd']} and {given['n_head']}: n_embd must be a multiple of n_head (each attention head takes "
        f"n_embd / n_head features); with n_embd={n_embd}, n_head {' or '.join(map(str, nearest_heads))} "
        f"(divisors of {n_embd}: {', '.join(map(str, divisors))}); with n_head={n_head}, n_embd "
        f"{' or '.join(map(str, widths))}"
    ]
