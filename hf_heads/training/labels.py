"""
Labels as the user wrote them, turned into what a model trains on, with nothing guessed.

- single-label classification: class ids follow the label values (integers in numeric order, strings sorted, a
  `ClassLabel` feature as given); `id2label` holds the original values, so `pipeline` answers in the user's labels.
- multi-label classification: each row holds a list of labels (or a string split on `label_delimiter`); the model
  gets a multi-hot vector and trains with binary cross-entropy.
- regression: each row holds a number; one output, mean squared error.

The problem type is the user's choice (`--problem_type`, default single-label); data that does not fit it is an error
that names the split, the column, the rows and the remedy.
"""

import math
from dataclasses import dataclass

from datasets import ClassLabel, DatasetDict, Sequence, Value

from .errors import RecipeError


PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass
class LabelSpace:
    """What the labels are: the problem type and, for classification, the original label of each class id."""

    problem_type: str
    names: list[str]

    def config_fields(self) -> dict:
        """The configuration fields the labels decide (the recipe sets them; `--config_overrides` may not)."""
        if self.problem_type == "regression":
            return dict(num_labels=1, problem_type="regression")
        return dict(
            num_labels=len(self.names), problem_type=self.problem_type, id2label=dict(enumerate(self.names)),
            label2id={name: index for index, name in enumerate(self.names)},
        )

    @property
    def is_single_label(self) -> bool:
        return self.problem_type == "single_label_classification"


def rows_text(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(row) for row in rows[:limit])
    more = ", ..." if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more} (0-based, header excluded)"


def _where(split: str, column: str) -> str:
    return f"The {split} split's label column {column!r}"


def _check_no_missing(splits: DatasetDict, column: str) -> None:
    for split, data in splits.items():
        missing = [row for row, value in enumerate(data[column]) if value is None or value == ""]
        if missing:
            raise RecipeError(
                f"{_where(split, column)} has no label in {len(missing)} {rows_text(missing)}. Give every row a "
                "label, or remove those rows."
            )


def _class_value(value, split: str, column: str, row: int):
    """A single-label value as int (integral numbers) or str; anything else is refused with the remedy."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        raise RecipeError(
            f"{_where(split, column)} holds the non-integral number {value!r} at {rows_text([row])}: class labels "
            "must be integers or strings. For a numeric target pass `--problem_type regression`."
        )
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        raise RecipeError(
            f"{_where(split, column)} holds a list ({value!r}) at {rows_text([row])}: for several labels per text "
            "pass `--problem_type multi_label_classification`."
        )
    raise RecipeError(
        f"{_where(split, column)} holds a {type(value).__name__} ({value!r}) at {rows_text([row])}; accepted labels: "
        "integers or strings (single-label), lists (multi-label), numbers (regression)."
    )


def single_label_space(splits: DatasetDict, column: str) -> tuple[LabelSpace, dict]:
    feature = splits["train"].features[column]
    if isinstance(feature, ClassLabel):
        # The dataset's own names and ids; `drop_unlabeled_splits` already dealt with GLUE's hidden -1 labels.
        return LabelSpace("single_label_classification", list(feature.names)), {}
    values = {}
    kinds = {}
    where = {}  # label -> split -> its first rows, to name the spellings of one label
    for split, data in splits.items():
        for row, value in enumerate(data[column]):
            value = _class_value(value, split, column, row)
            values.setdefault(split, set()).add(value)
            kinds.setdefault(type(value), (split, row, value))
            _note_row(where, value, split, row)
    if len(kinds) > 1:
        (split_a, row_a, a), (split_b, row_b, b) = list(kinds.values())[:2]
        raise RecipeError(
            f"Label column {column!r} mixes numbers and strings: {a!r} ({split_a} split, {rows_text([row_a])}) and "
            f"{b!r} ({split_b} split, {rows_text([row_b])}). Write every label the same way."
        )
    if str in kinds:
        # A CSV column holding both numbers and words arrives as strings: the same mix, written another way.
        written = [(split, value) for split, seen in values.items() for value in sorted(seen)]
        numbers = [(split, value) for split, value in written if as_number(value) is not None]
        words = [(split, value) for split, value in written if as_number(value) is None]
        if numbers and words:
            raise RecipeError(
                f"Label column {column!r} mixes numbers and strings: {numbers[0][1]!r} ({numbers[0][0]} split) and "
                f"{words[0][1]!r} ({words[0][0]} split). Write every label the same way."
            )
    _refuse_whitespace_variants(where, column)
    known = sorted(values["train"])  # numbers in numeric order, strings alphabetically
    if len(known) < 2:
        raise RecipeError(
            f"{_where('train', column)} holds a single class ({known[0]!r}): a classifier needs at least 2. Give "
            "rows of the other classes, or pass `--problem_type regression` for a numeric target."
        )
    for split, seen in values.items():
        unseen = sorted(seen - set(known))
        if unseen:
            raise RecipeError(
                f"The {split} split has labels {unseen[:5]} that the training split does not; known labels: "
                f"{known[:20]}."
            )
    index = {value: position for position, value in enumerate(known)}
    return LabelSpace("single_label_classification", [str(value) for value in known]), index


def _note_row(where: dict, label, split: str, row: int, kept: int = 6) -> None:
    rows = where.setdefault(label, {}).setdefault(split, [])
    if len(rows) < kept:  # a few rows name a spelling; more than the message shows would only cost memory
        rows.append(row)


def _refuse_whitespace_variants(where: dict, column: str) -> None:
    """
    Labels that differ only by surrounding whitespace ('sport', 'sport ') would become separate classes without a
    word. Which spelling the user meant cannot be known (the texts are not normalised either), so both are named with
    their rows.
    """
    spellings = {}
    for label in where:
        if isinstance(label, str):
            spellings.setdefault(label.strip(), []).append(label)
    clashes = [sorted(group) for group in spellings.values() if len(group) > 1]
    if not clashes:
        return

    def occurrences(label) -> str:
        return "; ".join(f"{split} split, {rows_text(rows)}" for split, rows in where[label].items())

    described = "; and ".join(
        " vs ".join(f"{label!r} ({occurrences(label)})" for label in group) for group in clashes[:3]
    )
    raise RecipeError(
        f"Label column {column!r} has labels that differ only by surrounding whitespace, which would become separate "
        f"classes: {described}. Write each label one way (e.g. without the spaces)."
    )


def _label_list(value, delimiter: str | None, split: str, column: str, row: int) -> list[str]:
    if isinstance(value, str) and delimiter is not None:
        return [part.strip() for part in value.split(delimiter) if part.strip()]
    if isinstance(value, list) and all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
        return [str(item) for item in value]
    hint = " or pass `--label_delimiter` to split strings" if isinstance(value, str) else ""
    raise RecipeError(
        f"{_where(split, column)} holds {value!r} at {rows_text([row])}; multi-label classification needs a list of "
        f"labels per row (strings or integers){hint}."
    )


def multi_label_space(splits: DatasetDict, column: str, delimiter: str | None) -> tuple[LabelSpace, dict]:
    lists = {
        split: [_label_list(value, delimiter, split, column, row) for row, value in enumerate(data[column])]
        for split, data in splits.items()
    }
    where = {}
    for split, rows in lists.items():
        for row, labels in enumerate(rows):
            for label in labels:
                _note_row(where, label, split, row)
    _refuse_whitespace_variants(where, column)
    names = _sorted_names({label for labels in lists["train"] for label in labels})
    if len(names) < 2:
        raise RecipeError(
            f"{_where('train', column)} holds {len(names)} distinct label(s); multi-label needs at least 2."
        )
    for split, rows in lists.items():
        unseen = sorted({label for labels in rows for label in labels} - set(names))
        if unseen:
            raise RecipeError(
                f"The {split} split has labels {unseen[:5]} that the training split does not; known: {names[:20]}."
            )
    return LabelSpace("multi_label_classification", names), {"lists": lists}


def _sorted_names(names: set[str]) -> list[str]:
    """Integers (written as strings, as list labels arrive) in numeric order, anything else alphabetically."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def as_number(value) -> float | None:
    """A regression target as a float; a CSV column with one stray word arrives as strings, so numbers written as
    strings count, and the word is what gets reported."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def regression_values(splits: DatasetDict, column: str) -> None:
    for split, data in splits.items():
        for row, value in enumerate(data[column]):
            if as_number(value) is None:
                raise RecipeError(
                    f"{_where(split, column)} holds {value!r} ({type(value).__name__}) at {rows_text([row])}; "
                    "regression needs a finite number in every row."
                )


def encode_labels(
    splits: DatasetDict, column: str, problem_type: str, delimiter: str | None = None
) -> tuple[DatasetDict, LabelSpace]:
    """
    `splits` with `column` replaced by a "labels" column the model trains on, and the `LabelSpace`. Single-label
    labels become a `ClassLabel` (so splits can be stratified), multi-label ones float multi-hot vectors, regression
    targets float32.
    """
    if problem_type not in PROBLEM_TYPES:
        raise RecipeError(f"`--problem_type`={problem_type!r} is not supported; accepted: {', '.join(PROBLEM_TYPES)}.")
    _check_no_missing(splits, column)
    if problem_type == "single_label_classification":
        space, index = single_label_space(splits, column)
        if not index:
            return _renamed(splits, column), space
        feature = ClassLabel(names=space.names)
        encode = lambda value: index[_class_value(value, "", column, 0)]  # noqa: E731  values were checked above
        encoded = {
            split: data.map(lambda rows: {"labels": [encode(v) for v in rows[column]]}, batched=True,
                            remove_columns=[column], features=_features(data, column, feature))
            for split, data in splits.items()
        }
        return DatasetDict(encoded), space
    if problem_type == "multi_label_classification":
        space, extra = multi_label_space(splits, column, delimiter)
        position = {name: index for index, name in enumerate(space.names)}
        encoded = {}
        for split, data in splits.items():
            vectors = []
            for labels in extra["lists"][split]:
                vector = [0.0] * len(space.names)
                for label in labels:
                    vector[position[label]] = 1.0
                vectors.append(vector)
            encoded[split] = data.remove_columns(column).add_column(
                "labels", vectors, feature=Sequence(Value("float32"))
            )
        return DatasetDict(encoded), space
    regression_values(splits, column)
    features = {split: _features(data, column, Value("float32")) for split, data in splits.items()}
    encoded = {split: data.map(lambda rows: {"labels": [as_number(v) for v in rows[column]]}, batched=True,
                               remove_columns=[column], features=features[split])
               for split, data in splits.items()}
    return DatasetDict(encoded), LabelSpace("regression", [])


def _features(data, column: str, label_feature):
    features = data.features.copy()
    del features[column]
    features["labels"] = label_feature
    return features


def _renamed(splits: DatasetDict, column: str) -> DatasetDict:
    return splits if column == "labels" else splits.rename_column(column, "labels")
