"""Data loading for the recipes: local files, hidden-label test splits, LM corpora, text8 cleaning, held-out blocks."""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_heads.training import data
from hf_heads.training.lm_data import hold_out_tail, load_text_corpus, normalize_to_alphabet


def with_labels(labels):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    return Dataset.from_dict({"text": [str(i) for i in range(len(labels))], "label": labels}, features=features)


def test_a_hidden_label_test_split_is_dropped_with_a_warning():
    splits = DatasetDict({"train": with_labels([0, 1] * 10), "test": with_labels([-1] * 4)})
    with pytest.warns(UserWarning, match="test split has no labels"):
        kept = data.drop_unlabeled_splits(splits, "label")
    assert list(kept) == ["train"]


def test_a_split_with_some_missing_labels_is_an_error():
    splits = DatasetDict({"train": with_labels([0, 1, -1, 1])})
    with pytest.raises(ValueError, match=r"The train split has 1 row\(s\) with label -1"):
        data.drop_unlabeled_splits(splits, "label")


def test_lm_corpus_from_bbc_news_is_the_classifier_training_split():
    corpus = load_text_corpus("bbc_news")
    assert list(corpus) == ["train"] and corpus["train"].column_names == ["text"]
    assert corpus["train"]["text"] == data.load_bbc_news(seed=0)["train"]["text"]


def test_lm_corpus_from_text_files_drops_empty_lines_and_checks_the_column(tmp_path):
    (tmp_path / "train.txt").write_text("first line\n\n  \nsecond line\n")
    corpus = load_text_corpus(data_files={"train": str(tmp_path / "train.txt")})
    assert corpus["train"]["text"] == ["first line", "second line"]
    with pytest.raises(ValueError, match=r"no column 'body'; its columns are \['text'\]"):
        load_text_corpus(data_files={"train": str(tmp_path / "train.txt")}, text_column="body")


def test_text8_cleaning():
    assert normalize_to_alphabet("The U.S.  economy -- grew 3%!", "abcdefghijklmnopqrstuvwxyz ") == "the u s economy grew"


def test_held_out_tail_is_contiguous_and_refuses_too_little_text():
    blocks = Dataset.from_dict({"input_ids": [[i] for i in range(20)]})
    split = hold_out_tail(blocks, 10)
    assert split["validation"]["input_ids"] == [[18], [19]] and len(split["train"]) == 18
    with pytest.raises(ValueError, match="cannot be split"):
        hold_out_tail(blocks.select([0]), 10)
    with pytest.raises(ValueError, match=r"`validation_split_percentage` must be in \(0, 100\), got 0"):
        hold_out_tail(blocks, 0)
