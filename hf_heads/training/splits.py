"""
Splits as `transformers`' example scripts use them: "train" trains, "validation" evaluates during training and picks
the best model, "test" gives the final figures and selects nothing. A validation split is carved from the training
rows only when the run needs one and the data has none, and the run says so.
"""

import math
from collections import Counter

from datasets import ClassLabel, DatasetDict

from .errors import RecipeError


def carve_validation(
    splits: DatasetDict, percentage: float, seed: int, reason: str, label_column: str = "labels"
) -> tuple[DatasetDict, str]:
    """
    `splits` with `percentage`% of its training rows moved to a new "validation" split, stratified by class when the
    labels are classes (a `ClassLabel` "labels" column); and the sentence that says so, for the log and the card.
    """
    if percentage <= 0:
        raise RecipeError(
            f"The run needs a validation split ({reason}) and the data has none, but "
            f"`--validation_split_percentage` is {percentage}: give `--validation_file`, or a percentage of the "
            "training rows to hold out (e.g. 10)."
        )
    train = splits["train"]
    stratify = isinstance(train.features.get("labels"), ClassLabel)
    if stratify:
        check_stratifiable(train, percentage, label_column)
    held_out = train.train_test_split(
        test_size=percentage / 100, seed=seed, stratify_by_column="labels" if stratify else None
    )
    carved = DatasetDict({**splits, "train": held_out["train"], "validation": held_out["test"]})
    message = (
        f"No validation split in the data and {reason}: {len(held_out['test'])} of the {len(train)} training rows "
        f"({percentage:g}%, {'stratified by class' if stratify else 'at random'}, seed {seed}) are held out as the "
        f"validation split; {len(held_out['train'])} rows train."
    )
    print(message)
    return carved, message


def check_stratifiable(train, percentage: float, label_column: str) -> None:
    """A stratified split needs every class at least twice, and room for one row of every class on each side."""
    names = train.features["labels"].names
    counts = Counter(train["labels"])
    rare = sorted((count, names[label]) for label, count in counts.items() if count < 2)
    if rare:
        listed = ", ".join(f"{name!r} ({count} row)" for count, name in rare[:5])
        raise RecipeError(
            f"The train split's label column {label_column!r} has classes with fewer than 2 rows ({listed}); a "
            f"stratified {percentage:g}% validation split needs at least 2 rows per class. Add rows of those classes, "
            "or give `--validation_file`."
        )
    held = math.ceil(len(train) * percentage / 100)
    if held < len(counts) or len(train) - held < len(counts):
        raise RecipeError(
            f"The train split has {len(train)} rows and {len(counts)} classes in {label_column!r}: a stratified "
            f"{percentage:g}% validation "
            f"split ({held} rows) cannot hold every class on both sides. Give more rows, a "
            "`--validation_split_percentage` that holds at least one row per class, or `--validation_file`."
        )


def limit_rows(splits: DatasetDict, limits: dict[str, int | None]) -> DatasetDict:
    """The first N rows of each split that has a limit (`--max_train_samples`, `--max_eval_samples`, ...)."""
    return DatasetDict({
        name: split.select(range(min(limits[name], len(split)))) if limits.get(name) is not None else split
        for name, split in splits.items()
    })
