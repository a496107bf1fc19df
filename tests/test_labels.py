"""Labels as users write them: class ids from the values, `id2label` holding the originals, the problem type chosen by
the user, and every label problem named (split, column, rows, remedy) before training. End to end through `main()`."""

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features
from transformers import pipeline

from hf_heads.training.classification import main
from hf_heads.training.labels import encode_labels


TINY = ["--model_type", "gpt2", "--config_overrides", "n_layer=1,n_embd=32,n_head=2", "--tokenizer_vocab_size", "300",
        "--max_length", "16", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no"]
WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "mango", "rocket", "violet", "castle", "pepper",
         "zebra"]


def write_csv(path, header, rows):
    path.write_text("\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def keyword_rows(labels, per_class):
    """Texts that name their class with one word, so a tiny model learns them in a few steps."""
    return [(f"this text is about {WORDS[index]}", label)
            for index, label in enumerate(labels) for _ in range(per_class)]


def test_twelve_integer_classes_reach_pipeline_as_the_users_labels(tmp_path):
    """The acceptance case: labels 0..11 in a CSV; the pipeline answers each class's text with that class's label."""
    labels = list(range(12))
    train = write_csv(tmp_path / "train.csv", "text,label", keyword_rows(labels, 8))
    test = write_csv(tmp_path / "test.csv", "text,label", keyword_rows(labels, 1))
    metrics = main([*TINY, "--train_file", train, "--test_file", test, "--output_dir", str(tmp_path / "out"),
                    "--num_train_epochs", "12", "--learning_rate", "3e-3", "--per_device_train_batch_size", "16"])
    assert metrics["test_accuracy"] == 1.0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(12)}  # numeric order, not '0', '1', '10', '11', '2'
    classify = pipeline("text-classification", model=str(tmp_path / "out"))
    for index, label in enumerate(labels):
        assert classify(f"this text is about {WORDS[index]}")[0]["label"] == str(label)


def test_labels_minus_one_and_plus_one_become_classes_and_come_back(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": label}
                                                   for t, label in keyword_rows([-1, 1], 12)])
    main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out"), "--num_train_epochs", "6",
          "--learning_rate", "3e-3"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "-1", "1": "1"}
    classify = pipeline("text-classification", model=str(tmp_path / "out"))
    assert classify(f"this text is about {WORDS[0]}")[0]["label"] == "-1"


def splits_of(train, **others):
    return DatasetDict({"train": Dataset.from_dict({"label": train}),
                        **{name: Dataset.from_dict({"label": values}) for name, values in others.items()}})


@pytest.mark.parametrize(
    "values, names, ids",
    [
        ([1, 2, 3, 4, 5, 3], ["1", "2", "3", "4", "5"], [0, 1, 2, 3, 4, 2]),  # star ratings
        ([-1, 1, 1, -1], ["-1", "1"], [0, 1, 1, 0]),
        ([10, 30, 20, 30], ["10", "20", "30"], [0, 2, 1, 2]),  # gaps
        ([1.0, 2.0, 3.0, 1.0], ["1", "2", "3"], [0, 1, 2, 0]),  # integral floats (a CSV column with a gap)
        ([0, 11, 2, 10, 1], ["0", "1", "2", "10", "11"], [0, 4, 2, 3, 1]),  # numeric order
        (["pos", "neg", "neutral"], ["neg", "neutral", "pos"], [2, 0, 1]),  # strings sorted
    ],
)
def test_class_ids_follow_the_label_values(values, names, ids):
    encoded, space = encode_labels(splits_of(values), "label", "single_label_classification")
    assert space.names == names and encoded["train"]["labels"] == ids
    assert encoded["train"].features["labels"].names == names


def test_a_class_label_feature_is_kept_as_given():
    features = Features({"label": ClassLabel(names=["z", "a"])})
    splits = DatasetDict({"train": Dataset.from_dict({"label": [0, 1, 1]}, features=features)})
    encoded, space = encode_labels(splits, "label", "single_label_classification")
    assert space.names == ["z", "a"] and encoded["train"]["labels"] == [0, 1, 1]


@pytest.mark.parametrize(
    "train, others, message",
    [
        ([1, None, 2, None], {}, r"The train split's label column 'label' has no label in 2 rows 1, 3"),
        (["a", "a"], {}, r"single class \('a'\).*at least 2.*--problem_type regression"),
        ([0.5, 1.5], {}, r"non-integral number 0.5 at row 0.*--problem_type regression"),
        ([[0, 1], [1]], {}, r"holds a list.*--problem_type multi_label_classification"),
        ([{"stars": 1}, {"stars": 2}], {}, r"holds a dict \(\{'stars': 1\}\) at row 0 .*accepted labels: integers or "
                                           r"strings \(single-label\), lists \(multi-label\), numbers \(regression\)"),
        ([1, 2], {"test": [3]}, r"The test split has labels \[3\] that the training split does not"),
        ([1, 2], {"validation": ["1"]}, r"mixes numbers and strings: 1 \(train split, row 0.*'1' \(validation split"),
    ],
)
def test_label_problems_are_named(train, others, message):
    with pytest.raises(ValueError, match=message):
        encode_labels(splits_of(train, **others), "label", "single_label_classification")


def test_mixed_json_labels_are_refused_before_training(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "1"}])
    with pytest.raises(ValueError, match=r"train file .*label column 'label' mixes numbers and strings \(1 at row 0"):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])


def test_a_missing_label_cell_names_split_column_and_row(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,label", [("a", 1), ("b", ""), ("c", 2)])
    with pytest.raises(ValueError, match=r"train split's label column 'label' has no label in 1 row 1 "):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_class_too_rare_to_stratify_names_it_and_the_remedy(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,label", [("a", "x")] * 9 + [("b", "y")])
    with pytest.raises(ValueError, match=r"fewer than 2 rows \('y' \(1 row\)\).*--validation_file"):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])


def test_multi_label_from_lists_trains_with_bce_and_reports_f1(tmp_path):
    rows = [{"text": f"{WORDS[0] if 'a' in tags else ''} {WORDS[1] if 'b' in tags else ''} text", "labels": tags}
            for tags in (["a"], ["b"], ["a", "b"], []) for _ in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", rows[::6])
    metrics = main([*TINY, "--train_file", train, "--test_file", test, "--label_column", "labels",
                    "--problem_type", "multi_label_classification", "--output_dir", str(tmp_path / "out"),
                    "--num_train_epochs", "2"])
    assert {"test_micro_f1", "test_macro_f1"} <= set(metrics)
    assert metrics["eval_samples"] == 0  # a test split and no evaluation during training: nothing carved
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {"0": "a", "1": "b"}


def test_multi_label_from_a_delimited_column(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,tags", [("x y", "x|y"), ("x", "x"), ("y", "y"), ("z", "")] * 5)
    with pytest.raises(ValueError, match="no label in 5 rows"):  # an empty cell is a missing label, not "no tags"
        main([*TINY, "--train_file", train, "--label_column", "tags", "--problem_type", "multi_label_classification",
              "--label_delimiter", "|", "--output_dir", str(tmp_path / "out")])
    train = write_csv(tmp_path / "train.csv", "text,tags", [("x y", "x|y"), ("x", "x"), ("y", "y")] * 5)
    main([*TINY, "--train_file", train, "--label_column", "tags", "--problem_type", "multi_label_classification",
          "--label_delimiter", "|", "--output_dir", str(tmp_path / "out"), "--max_steps", "2"])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "x", "1": "y"}


def test_regression_reports_mse_mae_and_pearson(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,score", [(f"value {i % 7}", i % 7 / 2) for i in range(40)])
    metrics = main([*TINY, "--train_file", train, "--label_column", "score", "--problem_type", "regression",
                    "--output_dir", str(tmp_path / "out"), "--max_steps", "3"])
    assert {"eval_mse", "eval_mae", "eval_pearson_r"} <= set(metrics)
    assert metrics["eval_samples"] == 4  # 10% of 40 rows, at random (regression has no classes to stratify)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_float_labels_are_not_silently_regression(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,score", [("a", 0.25), ("b", 0.75)] * 5)
    with pytest.raises(ValueError, match="--problem_type regression"):
        main([*TINY, "--train_file", train, "--label_column", "score", "--output_dir", str(tmp_path / "out")])


def test_csv_labels_spelled_na_or_none_are_classes_not_missing(tmp_path):
    # pandas reads 'NA', 'None' and 'nan' as missing by default; in a label column they are the user's class names.
    train = write_csv(tmp_path / "train.csv", "text,label", keyword_rows(["NA", "None", "yes"], 10))
    main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out"), "--num_train_epochs", "1"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["NA", "None", "yes"]


def test_csv_labels_mixing_numbers_and_words_are_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", "text,label", keyword_rows([1, "a"], 4))
    with pytest.raises(ValueError, match="mixes numbers and strings"):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.csv", "", "is empty"),
        ("quote.csv", 'text,label\n"unclosed,1\nfine,0\n', "could not be read as csv"),
        ("broken.jsonl", '{"text": "a", "label": 1}\n{"text": "b" "label": 0}\n', "could not be read as json"),
    ],
)
def test_files_the_parser_cannot_read_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        main([*TINY, "--train_file", str(tmp_path / name), "--output_dir", str(tmp_path / "out")])
    assert name in str(caught.value)


def test_labels_differing_only_by_surrounding_whitespace_are_refused_naming_both(tmp_path):
    """'sport' and 'sport ' (a trailing space, as spreadsheets leave them) would silently be two classes."""
    tmp_path.joinpath("train.csv").write_text("text,label\na match,sport\nshares fell,business\nthe final,sport \n"
                                              "a goal,sport\nprofits,business\n")
    with pytest.raises(ValueError, match=r"Label column 'label' has labels that differ only by surrounding "
                                         r"whitespace, which would become separate classes: 'sport' \(train split, "
                                         r"rows 0, 3 \(0-based, header excluded\)\) vs 'sport ' \(train split, row 2 "
                                         r"\(0-based, header excluded\)\)\. Write each label one way"):
        main([*TINY, "--train_file", str(tmp_path / "train.csv"), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_whitespace_variants_across_splits_and_in_multi_label_lists_are_refused():
    splits = splits_of(["a", "b", "a", "b"], test=["a ", "b"])
    with pytest.raises(ValueError, match=r"'a' \(train split, rows 0, 2 .*\) vs 'a ' \(test split, row 0 "):
        encode_labels(splits, "label", "single_label_classification")
    lists = splits_of([["x", "y"], [" y"], ["x"]])
    with pytest.raises(ValueError, match=r"' y' \(train split, row 1 .*\) vs 'y' \(train split, row 0 "):
        encode_labels(lists, "label", "multi_label_classification")
