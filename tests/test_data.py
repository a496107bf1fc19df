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


# ----- texts and splits as users bring them, through the classifier recipe's `main()`

import json  # noqa: E402

from transformers import AutoTokenizer, pipeline  # noqa: E402

from hf_heads.training.classification import main  # noqa: E402


TINY = ["--model_type", "gpt2", "--config_overrides", "n_layer=1,n_embd=32,n_head=2", "--tokenizer_vocab_size", "300",
        "--max_length", "16", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no"]


def write_rows(path, header, rows, encoding="utf-8"):
    path.write_bytes(("\n".join([header] + rows) + "\n").encode(encoding))
    return str(path)


def results(output_dir):
    return json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.parametrize("model_type", ["gpt2", "gaam_gpt2"])
def test_empty_whitespace_and_missing_texts_train_and_predict(tmp_path, model_type):
    """Empty CSV cells arrive as missing values; GPT-2's BPE turns "" into no tokens: both still get a prediction."""
    rows = ['"",a', '"   ",b', ",a", "good text,b"] * 6
    train = write_rows(tmp_path / "train.csv", "text,label", rows)
    test = write_rows(tmp_path / "test.csv", "text,label", rows[:4])
    main([*TINY, "--model_type", model_type, "--train_file", train, "--test_file", test,
          "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
          "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"])
    assert results(tmp_path / "out")["test_samples"] == 4
    classify = pipeline("text-classification", model=str(tmp_path / "out"), trust_remote_code=True)
    answers = classify(["", "   ", "good text", "x " * 500], truncation=True, batch_size=4)  # the last is too long
    assert [answer["label"] in ("a", "b") for answer in answers] == [True] * 4


def test_saved_tokenizer_truncates_to_max_length(tmp_path):
    train = write_rows(tmp_path / "train.csv", "text,label", ["one,a", "two,b"] * 10)
    main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.model_max_length == 16
    assert len(tokenizer("word " * 100, truncation=True)["input_ids"]) == 16


def test_numbers_in_a_csv_text_column_are_text(tmp_path):
    train = write_rows(tmp_path / "train.csv", "text,label", ["1,a", "2,b"] * 10)
    main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": 5, "label": "a"},
         r"train file '.*train.jsonl': column 'text' holds a value of type int at row 2 \(0-based\)"),
        ({"text": ["a", "b"], "label": "a"}, r"column 'text' holds a value of type list at row 2"),
        ({"text": {"title": "a"}, "label": "a"}, r"column 'text' holds a value of type dict at row 2"),
    ],
)
def test_non_string_texts_name_file_column_row_and_type(tmp_path, record, message):
    rows = [{"text": "fine", "label": "a"}, {"text": "also fine", "label": "b"}, record]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(ValueError, match=message):
        main([*TINY, "--train_file", str(tmp_path / "train.jsonl"), "--output_dir", str(tmp_path / "out")])


def test_another_encoding_is_named_and_read_with_encoding(tmp_path):
    train = write_rows(tmp_path / "train.csv", "text,label", ["caf\u00e9 noir,a", "th\u00e9 vert,b"] * 10, "latin-1")
    with pytest.raises(ValueError, match=r"is not utf-8 text: byte b'\\xe9' on line 2.*--encoding latin-1"):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])
    main([*TINY, "--train_file", train, "--encoding", "latin-1", "--output_dir", str(tmp_path / "out"),
          "--max_steps", "1"])


def test_a_directory_is_not_a_data_file(tmp_path):
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(ValueError, match=r"`--train_file` '.*data.csv' is a directory; give one data file"):
        main([*TINY, "--train_file", str(tmp_path / "data.csv"), "--output_dir", str(tmp_path / "out")])


def test_validation_file_with_other_columns(tmp_path):
    train = write_rows(tmp_path / "train.csv", "text,label", ["one,a", "two,b"] * 10)
    extra = write_rows(tmp_path / "validation.csv", "id,text,label,note", ["1,one,a,x", "2,two,b,y"])
    main([*TINY, "--train_file", train, "--validation_file", extra, "--output_dir", str(tmp_path / "out"),
          "--max_steps", "1"])
    assert results(tmp_path / "out")["eval_samples"] == 2
    other = write_rows(tmp_path / "other.csv", "body,label", ["one,a"])
    with pytest.raises(ValueError, match=r"The validation file '.*other.csv' has no column 'text'; its columns are "
                                         r"\['body', 'label'\] \(set `--text_column`\)"):
        main([*TINY, "--train_file", train, "--validation_file", other, "--output_dir", str(tmp_path / "out2")])


def test_label_column_named_labels(tmp_path):
    train = write_rows(tmp_path / "train.csv", "text,labels", ["one,a", "two,b"] * 10)
    main([*TINY, "--train_file", train, "--label_column", "labels", "--output_dir", str(tmp_path / "out"),
          "--max_steps", "1"])


def test_train_and_validation_files_are_used_as_given(tmp_path, capsys):
    """No test file: no test figures and nothing carved (the 1,875-row file trained on 1,500 is the failure)."""
    train = write_rows(tmp_path / "train.csv", "text,label", ["one,a", "two,b"] * 20)
    validation = write_rows(tmp_path / "validation.csv", "text,label", ["one,a", "two,b"] * 3)
    metrics = main([*TINY, "--train_file", train, "--validation_file", validation, "--output_dir",
                    str(tmp_path / "out"), "--max_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1"])
    assert (metrics["train_samples"], metrics["eval_samples"], metrics["test_samples"]) == (40, 6, 0)
    assert not any(key.startswith("test_") and key != "test_samples" for key in metrics)
    assert "held out" not in capsys.readouterr().out


def test_validation_is_carved_only_when_needed_and_said(tmp_path, capsys):
    train = write_rows(tmp_path / "train.csv", "text,label", ["one,a", "two,b", "three,c", "four,d"] * 10)
    test = write_rows(tmp_path / "test.csv", "text,label", ["one,a", "two,b", "three,c", "four,d"])
    # A test split and no evaluation during training: the training rows all train.
    metrics = main([*TINY, "--train_file", train, "--test_file", test, "--output_dir", str(tmp_path / "a"),
                    "--max_steps", "1"])
    assert (metrics["train_samples"], metrics["eval_samples"], metrics["test_samples"]) == (40, 0, 4)
    # Best-model selection needs a validation split: 10% of train, stratified, said in the log. Test selects nothing.
    metrics = main([*TINY, "--train_file", train, "--test_file", test, "--output_dir", str(tmp_path / "b"),
                    "--num_train_epochs", "2", "--eval_strategy", "epoch", "--save_strategy", "epoch",
                    "--load_best_model_at_end", "true"])
    assert (metrics["train_samples"], metrics["eval_samples"], metrics["test_samples"]) == (36, 4, 4)
    assert "4 of the 40 training rows (10%, stratified by class, seed 42) are held out" in capsys.readouterr().out
    assert "stratified by class" in (tmp_path / "b" / "README.md").read_text()
    # No test split at all: the held-out figures come from a carved validation split.
    metrics = main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "c"), "--max_steps", "1"])
    assert (metrics["eval_samples"], metrics["test_samples"]) == (4, 0) and "eval_accuracy" in metrics
    assert "test_accuracy" not in metrics


def test_bbc_news_has_its_fixed_test_split(tmp_path):
    metrics = main([*TINY, "--dataset_name", "bbc_news", "--max_train_samples", "16", "--output_dir",
                    str(tmp_path / "out"), "--max_steps", "1"])
    assert metrics["test_samples"] == 445 and metrics["eval_samples"] == 0
    assert "stratified 80/20 split" in (tmp_path / "out" / "README.md").read_text()


def test_spreadsheet_exports_tsv_and_byte_order_mark(tmp_path):
    """Excel writes UTF-8 with a byte-order mark; a .tsv is a CSV with tabs."""
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "one,a\ntwo,b\n" * 10, encoding="utf-8-sig")
    main([*TINY, "--train_file", str(train), "--output_dir", str(tmp_path / "csv"), "--max_steps", "1"])
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "one, two\ta\nthree\tb\n" * 10)
    main([*TINY, "--train_file", str(tmp_path / "train.tsv"), "--output_dir", str(tmp_path / "tsv"),
          "--max_steps", "1"])
    assert json.loads((tmp_path / "tsv" / "config.json").read_text())["id2label"] == {"0": "a", "1": "b"}


def test_a_source_split_serves_as_test_and_train_rows_are_limited_before_carving(tmp_path, capsys):
    """GLUE-style data: the source's validation split becomes the test split (`--test_split`), the first N training
    rows are taken, then 10% of those are held out for model selection."""
    metrics = main([*TINY, "--dataset_name", "bbc_news", "--test_split", "test", "--max_train_samples", "100",
                    "--eval_strategy", "epoch", "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])
    assert (metrics["train_samples"], metrics["eval_samples"], metrics["test_samples"]) == (90, 10, 445)
    with pytest.raises(ValueError, match=r"`--test_split`='dev' is not a labelled split of the data other than train; "
                                         r"its splits are \['train', 'test'\]"):
        main([*TINY, "--dataset_name", "bbc_news", "--test_split", "dev", "--output_dir", str(tmp_path / "out2")])


@pytest.mark.parametrize(
    "lines, message",
    [
        # A quoted field spans lines 2-3, so the record with a field too many starts on line 4 of the editor; the one
        # with a field too few is on line 6 (line 5 is blank and skipped, as pandas skips it).
        (["text,label", '"two', 'lines",a', "b,x,extra", "", "just text", "c,y"],
         r"`--train_file` '.*train.csv': line 4 has 3 fields, line 6 has 1 field, where the header \(line 1\) has 2 "
         r"\('text', 'label'\); lines as an editor numbers them\. A field that holds ',' must be quoted"),
        (["text,label", "a,x", '"never closed,y', "c,x"],
         r"`--train_file` '.*train.csv' could not be read as csv: the quoted field that starts on line 3 is never "
         r"closed"),
    ],
)
def test_ragged_csv_lines_are_named_as_the_editor_shows_them(tmp_path, lines, message):
    train = write_rows(tmp_path / "train.csv", lines[0], lines[1:])
    with pytest.raises(ValueError, match=message):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_tsv_line_with_a_tab_too_many_is_named(tmp_path):
    train = write_rows(tmp_path / "train.tsv", "text\tlabel", ["a, b\tx", "c\ty\tz", "d\tx"])
    with pytest.raises(ValueError, match=r"line 3 has 3 fields, where the header \(line 1\) has 2"):
        main([*TINY, "--train_file", train, "--output_dir", str(tmp_path / "out")])
