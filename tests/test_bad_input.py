"""One case per row of `docs/errors.md`: a user mistake, and the error that names the argument, the value and what is
accepted, raised before any training starts. The last test keeps the table and these cases in step."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, GPT2Config


ROOT = Path(__file__).resolve().parents[1]
from hf_heads.training import language_modeling as pretrain_lm  # noqa: E402
from hf_heads.training import search  # noqa: E402
from hf_heads.training import classification as train_classifier  # noqa: E402

import hf_heads  # noqa: E402
from hf_heads import (  # noqa: E402
    CharTokenizer,
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaamGPT2Model,
    GaussianAdaptiveAttention,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
)


TINY_GPT2 = GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=16)
CLASSIFIER = ["--model_type", "gaam_gpt2", "--config_overrides", "n_layer=1,n_embd=32,n_head=4,n_positions=64",
              "--report_to", "none", "--use_cpu", "true"]


def classifier_run(tmp_path, *flags):
    data = [] if "--train_file" in flags else ["--dataset_name", "bbc_news"]
    return train_classifier.main([*CLASSIFIER, *data, "--output_dir", str(tmp_path / "out"), *flags])


def lm_run(tmp_path, *flags):
    text = tmp_path / "text.txt"
    text.write_text("some text for the language model " * 20)
    return pretrain_lm.main(["--train_file", str(text), "--output_dir", str(tmp_path / "lm"), "--report_to", "none",
                             "--use_cpu", "true", *flags])


def search_run(tmp_path, **settings):
    base = dict(recipe="train_classifier", sampler="grid", space={"gaam_num_heads": [1, 2]},
                arguments={"model_type": "gaam_gpt2", "dataset_name": "bbc_news", "output_dir": str(tmp_path / "s")})
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({**base, **settings}))
    return search.main([str(tmp_path / "search.yaml")])


def csv_run(tmp_path, rows, *flags):
    return classifier_run(tmp_path, "--train_file", write_csv(tmp_path, "train.csv", ["text,label", *rows]), *flags)


def jsonl_run(tmp_path, records, *flags):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return classifier_run(tmp_path, "--train_file", str(path), *flags)


def yaml_run(tmp_path, **arguments):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(arguments))
    return train_classifier.main([str(tmp_path / "run.yaml")])


def saved_tiny_classifier(tmp_path):
    model = GaamGPT2ForSequenceClassification(GaamGPT2Config(**TINY_GPT2.to_dict() | dict(gaam_num_heads=2)))
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def write_csv(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return str(path)


# (case id, the mistake, the call, the error type, what the message must say)
CASES = [
    # The GAAM op
    ("gaam-heads", "GAAM with 0 heads", lambda t: GaussianAdaptiveAttention(0, 5, -1),
     ValueError, r"`num_heads` must be a positive integer, got 0"),
    ("gaam-gaussians", "GAAM with -1 Gaussians", lambda t: GaussianAdaptiveAttention(4, -1, -1),
     ValueError, r"`num_gaussians` must be a positive integer, got -1"),
    ("gaam-eps", "GAAM with eps=0", lambda t: GaussianAdaptiveAttention(4, 5, -1, eps=0),
     ValueError, r"`eps` must be a positive number, got 0"),
    ("gaam-axis-type", "GAAM with norm_axis='seq'", lambda t: GaussianAdaptiveAttention(4, 5, "seq"),
     ValueError, r"`norm_axis` must be an integer axis index, got 'seq'"),
    ("gaam-axis-range", "GAAM over axis 3 of a 3-D input",
     lambda t: GaussianAdaptiveAttention(2, 5, 3)(torch.randn(2, 4, 8)),
     ValueError, r"`norm_axis`=3 is out of range for an input with 3 dimensions \(accepted: -3 to 2\)"),
    ("gaam-too-many-heads", "8 GAAM heads over 8 features",
     lambda t: GaussianAdaptiveAttention(8, 5, -1)(torch.randn(2, 4, 8)),
     ValueError, r"`num_heads`=8 splits axis 2 of size 8 into chunks of 1 element\(s\); each head needs at least 2"),
    ("gaam-mask-shape", "an attention_mask of the wrong shape",
     lambda t: GaussianAdaptiveAttention(2, 5, 1)(torch.randn(2, 4, 8), attention_mask=torch.ones(2, 5)),
     ValueError, r"`attention_mask` must have shape \(batch, sequence\) = \(2, 4\).*got \(2, 5\)"),
    ("from-reference", "converting something that is not a reference GAAM module",
     lambda t: hf_heads.from_reference(torch.nn.Linear(2, 2)),
     TypeError, r"`module` must be a reference .*got Linear"),
    # Configurations
    ("gaam-placement", "gaam_placement='inside'", lambda t: GaamGPT2Config(gaam_placement="inside"),
     ValueError, r"`gaam_placement`='inside' is not supported; accepted values: 'augment', 'replace'"),
    ("gaam-norm-axis", "gaam_norm_axis='tokens'", lambda t: GaamGPT2Config(gaam_norm_axis="tokens"),
     ValueError, r"`gaam_norm_axis`='tokens' is not supported; accepted values: "),
    ("gaam-layers", "gaam_layers=[0, 5] on a 2-layer model",
     lambda t: GaamGPT2Model(GaamGPT2Config(n_layer=2, n_embd=8, n_head=2, gaam_layers=[0, 5])),
     ValueError, r"`gaam_layers`=\[0, 5\] must list distinct block indices in \[0, 1\]"),
    ("classifier-pooling", "classifier_pooling='max'", lambda t: GaamGPT2Config(classifier_pooling="max"),
     ValueError, r"`classifier_pooling`='max' is not supported; accepted values: "),
    ("head-type", "head_type='lstm'", lambda t: HeadedConfig(backbone_config=TINY_GPT2, head_type="lstm"),
     ValueError, r"`head_type`='lstm' is not supported; accepted values: 'attention', 'daam', 'gaam_layers', "
                 r"'last_token', 'linear', 'mean', 'scalar_mix'"),
    ("head-pooling", "head_pooling='max'", lambda t: HeadedConfig(backbone_config=TINY_GPT2, head_pooling="max"),
     ValueError, r"`head_pooling`='max' is not supported; accepted values: 'last', 'mean', 'attention'"),
    ("num-labels", "num_labels=0", lambda t: HeadedConfig(backbone_config=TINY_GPT2, num_labels=0),
     ValueError, r"`num_labels` must be at least 1, got 0"),
    ("head-num-heads", "an attention head whose heads do not divide the hidden size",
     lambda t: HeadedConfig(backbone_config=TINY_GPT2, head_type="attention", head_num_heads=5),
     ValueError, r"head_type='attention': `head_num_heads`=5 does not fit; it must divide the backbone's hidden size "
                 r"32"),
    ("token-head", "token classification with a pooling head",
     lambda t: HeadedModelForTokenClassification(HeadedConfig(backbone_config=TINY_GPT2, head_type="mean")),
     ValueError, r"head_type='mean' cannot serve token classification; heads that can: 'attention', 'linear'"),
    # Model loading and features
    ("checkpoint-shapes", "a checkpoint with 2 GAAM heads loaded as 4",
     lambda t: GaamGPT2ForSequenceClassification.from_pretrained(saved_tiny_classifier(t), gaam_num_heads=4),
     RuntimeError, r"Checkpoint '.*' has tensors whose shapes do not fit this configuration .* "
                 r"`ignore_mismatched_sizes=True`"),
    ("cache-unfrozen", "caching features of a backbone that trains",
     lambda t: hf_heads.cache_backbone_features(
         HeadedModelForSequenceClassification(HeadedConfig(backbone_config=BertConfig(
             num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=50))),
         None),
     ValueError, r"freeze_backbone"),
    ("explain-top-k", "explain(top_k=0)", lambda t: hf_heads.explain(None, None, "x", top_k=0),
     ValueError, r"`top_k` must be a positive integer, got 0"),
    ("char-alphabet", "a character alphabet with repeats", lambda t: CharTokenizer(alphabet="abca"),
     ValueError, r"`alphabet` must list each character once; repeated: \['a'\]"),
    # Recipes: data
    ("text-column", "--text_column body on data without it", lambda t: classifier_run(t, "--text_column", "body"),
     ValueError, r"no column 'body'; its columns are \['text', 'label'\]"),
    ("empty-split", "an empty test file",
     lambda t: classifier_run(t, "--train_file", write_csv(t, "train.csv", ["text,label", "a,x", "b,y"]),
                              "--test_file", write_csv(t, "test.csv", ["text,label"])),
     ValueError, r"`--test_file` '.*test.csv' has no rows"),
    ("unknown-labels", "test labels the training data does not have",
     lambda t: classifier_run(t, "--train_file", write_csv(t, "train.csv", ["text,label", "a,x", "b,y"]),
                              "--test_file", write_csv(t, "test.csv", ["text,label", "c,z"])),
     ValueError, r"The test split has labels \['z'\] that the training split does not; known labels: \['x', 'y'\]"),
    ("missing-file", "a --train_file that does not exist",
     lambda t: classifier_run(t, "--train_file", str(t / "nope.csv")),
     FileNotFoundError, r"`--train_file` '.*nope.csv' does not exist"),
    ("max-length", "--max_length above the model's positions", lambda t: classifier_run(t, "--max_length", "100"),
     ValueError, r"`--max_length`=100 \(given, or the recipe's default\) exceeds the model's 64 positions: pass "
     r"`--max_length` 64 or less"),
    # Recipes: flags
    ("model-type", "--model_type bert", lambda t: classifier_run(t, "--model_type", "bert"),
     ValueError, r"`--model_type`='bert' is not supported; accepted: gpt2, gaam_gpt2"),
    ("config-overrides", "--config_overrides n_layer", lambda t: classifier_run(t, "--config_overrides", "n_layer"),
     ValueError, r"`--config_overrides` 'n_layer' is not `name=value` \(entries are separated by commas"),
    ("weight-init", "--weight_init zeros", lambda t: classifier_run(t, "--weight_init", "zeros"),
     ValueError, r"`--weight_init`='zeros' is not supported; accepted: default, xavier_uniform"),
    ("lora-rank", "--lora_r -1", lambda t: classifier_run(t, "--lora_r", "-1"),
     ValueError, r"`--lora_r` must be 0 \(off\) or positive, got -1"),
    ("validation-split", "--validation_split_percentage 150",
     lambda t: classifier_run(t, "--validation_split_percentage", "150"),
     ValueError, r"`--validation_split_percentage` must be in \[0, 100\), got 150"),
    ("output-dir", "an --output_dir that holds a model",
     lambda t: (saved_tiny_classifier(t).rename(t / "out"), classifier_run(t)),
     ValueError, r"already holds a model or checkpoints \(config.json, model.safetensors\); choose another folder, "
                 r"pass `--resume_from_checkpoint true` .* or `--overwrite_output_dir true`"),
    ("output-dir-checkpoints", "an --output_dir a killed run left (checkpoints only)",
     lambda t: ((t / "out" / "checkpoint-8").mkdir(parents=True), classifier_run(t)),
     ValueError, r"already holds a model or checkpoints \(checkpoint-8\)"),
    ("output-dir-unwritable", "an --output_dir that cannot be created",
     lambda t: ((t / "file").write_text("x"), classifier_run(t, "--output_dir", str(t / "file" / "run"))),
     PermissionError, r"`--output_dir` .*file/run cannot be written to \(Not a directory\)"),
    ("output-dir-in-use", "an --output_dir a running process is writing to",
     lambda t: ((t / "out").mkdir(), (t / "out" / "_hf_heads_run.lock").write_text(
         json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "now"})), classifier_run(t)),
     RuntimeError, r"`--output_dir` .*out is in use by a running process \(pid \d+"),
    ("resume", "--resume_from_checkpoint true with no checkpoint",
     lambda t: classifier_run(t, "--resume_from_checkpoint", "true"),
     ValueError, r"`--resume_from_checkpoint`='true': `--output_dir` .* holds no complete checkpoint"),
    ("resume-damaged", "--resume_from_checkpoint naming a damaged checkpoint",
     lambda t: ((t / "out" / "checkpoint-8").mkdir(parents=True),
                (t / "out" / "checkpoint-8" / "trainer_state.json").write_text('{"global_st'),
                classifier_run(t, "--resume_from_checkpoint", str(t / "out" / "checkpoint-8"))),
     ValueError, r"`--resume_from_checkpoint` .*checkpoint-8 is damaged: trainer_state.json does not parse"),
    ("hub-strategy", "--push_to_hub with the default --hub_strategy",
     lambda t: classifier_run(t, "--push_to_hub", "true", "--hub_model_id", "someone/model"),
     ValueError, r"`--hub_strategy`='every_save' uploads the output folder while training.*--hub_strategy end"),
    ("license", "--license 'Apache 2.0'", lambda t: classifier_run(t, "--license", "Apache 2.0"),
     ValueError, r"`--license`='Apache 2.0' is not a Hub license identifier"),
    ("tokenizer", "--tokenizer words", lambda t: lm_run(t, "--model_type", "gpt2", "--tokenizer", "words"),
     ValueError, r"`--tokenizer`='words' is not supported; accepted: bpe, char"),
    ("early-stopping", "--early_stopping_patience without evaluations",
     lambda t: lm_run(t, "--model_type", "gpt2", "--early_stopping_patience", "2"),
     ValueError, r"`--early_stopping_patience`=2 needs evaluations and the best model kept"),
    ("block-size", "--block_size above the model's positions",
     lambda t: lm_run(t, "--model_type", "gpt2", "--tokenizer", "char", "--config_overrides",
                      "n_layer=1,n_embd=32,n_head=4,n_positions=16", "--block_size", "32"),
     ValueError, r"`--block_size`=32 \(given, or the recipe's default\) exceeds the model's 16 positions"),
    # Recipes: arguments as people write them
    ("unknown-flag", "a misspelt flag", lambda t: classifier_run(t, "--lerning_rate", "1e-3"),
     ValueError, r"Unknown argument: --lerning_rate \(did you mean --learning_rate\?\)"),
    ("yaml-key", "a misspelt key in a YAML file", lambda t: yaml_run(t, model_type="gpt2", num_train_epoch=1),
     ValueError, r"Unknown key in .*run.yaml: num_train_epoch \(did you mean num_train_epochs\?\)"),
    ("override-field", "misspelt --config_overrides fields",
     lambda t: classifier_run(t, "--config_overrides", "gaam_num_head=8,classifer_pooling=mean"),
     ValueError, r"`--config_overrides` has 2 wrong entries:\n  - gaam_num_head=8: not a field of the model's "
                 r"configuration \(did you mean gaam_num_heads\?\)\n  - classifer_pooling='mean': not a field of the "
                 r"model's configuration \(did you mean classifier_pooling\?\)"),
    ("override-set-by-recipe", "--config_overrides num_labels=3", lambda t: classifier_run(t, "--config_overrides",
                                                                                      "num_labels=3"),
     ValueError, r"`--config_overrides` has 1 wrong entry:\n  - num_labels=3: the recipe sets it itself \(it comes "
                 r"from the data's labels and --problem_type\)"),
    ("override-shape", "n_embd that n_head does not divide",
     lambda t: classifier_run(t, "--config_overrides", "n_layer=1,n_embd=30,n_head=4"),
     ValueError, r"- n_embd=30 and n_head=4: n_embd must be a multiple of n_head .*; with n_embd=30, n_head 3 or 5 "
                 r"\(divisors of 30: 1, 2, 3, 5, 6, 10, 15, 30\); with n_head=4, n_embd 28 or 32"),
    ("problem-type", "--problem_type multi_label", lambda t: classifier_run(t, "--problem_type", "multi_label"),
     ValueError, r"`--problem_type`='multi_label' is not supported; accepted: single_label_classification, "),
    ("label-delimiter", "--label_delimiter without multi-label", lambda t: classifier_run(t, "--label_delimiter", "|"),
     ValueError, r"`--label_delimiter` splits multi-label cells: pass `--problem_type multi_label_classification`"),
    ("text-is-label", "--text_column equal to --label_column", lambda t: classifier_run(t, "--text_column", "label"),
     ValueError, r"`--text_column` and `--label_column` are both 'label'; they must differ"),
    ("max-train-samples", "--max_train_samples 0", lambda t: classifier_run(t, "--max_train_samples", "0"),
     ValueError, r"`--max_train_samples` must be a positive number of rows \(or left out for all\), got 0"),
    ("max-eval-samples", "--max_eval_samples 0", lambda t: classifier_run(t, "--max_eval_samples", "0"),
     ValueError, r"`--max_eval_samples` must be a positive number of rows \(or left out for all\), got 0"),
    # Recipes: files and texts
    ("directory", "a directory as --train_file", lambda t: classifier_run(t, "--train_file", str(t)),
     ValueError, r"`--train_file` '.*' is a directory; give one data file"),
    ("encoding", "a Latin-1 file read as UTF-8",
     lambda t: (t.joinpath("train.csv").write_bytes("text,label\ncaf\u00e9,a\n".encode("latin-1")),
                classifier_run(t, "--train_file", str(t / "train.csv"))),
     ValueError, r"`--train_file` '.*train.csv' is not utf-8 text: byte b'\\xe9' on line 2 cannot be decoded. Pass "
                 r"the file's encoding, e.g. `--encoding latin-1`"),
    ("text-type", "a number where a text should be (JSON)",
     lambda t: jsonl_run(t, [{"text": "a", "label": "x"}, {"text": 5, "label": "y"}]),
     ValueError, r"The train file '.*train.jsonl': column 'text' holds a value of type int at row 1 \(0-based\): '5'; texts must be "
                 r"strings"),
    ("csv-ragged", "a CSV line with a field too many (an unquoted comma)", lambda t: csv_run(t, ["a,x", "b, c,y"]),
     ValueError, r"`--train_file` '.*train.csv': line 3 has 3 fields, where the header \(line 1\) has 2 \('text', "
                 r"'label'\); lines as an editor numbers them. A field that holds ',' must be quoted"),
    ("other-columns", "a validation file without the text column",
     lambda t: csv_run(t, ["a,x", "b,y"], "--validation_file", write_csv(t, "validation.csv", ["body,label", "a,x"])),
     ValueError, r"The validation file '.*validation.csv' has no column 'text'; its columns are \['body', 'label'\]"),
    # Recipes: labels and splits
    ("label-missing", "an empty label cell", lambda t: csv_run(t, ["a,x", "b,", "c,y"]),
     ValueError, r"The train split's label column 'label' has no label in 1 row 1 \(0-based, header excluded\)"),
    ("label-whitespace", "labels that differ only by a trailing space", lambda t: csv_run(t, ["a,x", "b,x ", "c,y"]),
     ValueError, r"Label column 'label' has labels that differ only by surrounding whitespace, which would become "
                 r"separate classes: 'x' \(train split, row 0 \(0-based, header excluded\)\) vs 'x ' \(train split, "
                 r"row 1 \(0-based, header excluded\)\)"),
    ("label-single-class", "one class only", lambda t: csv_run(t, ["a,x", "b,x"]),
     ValueError, r"The train split's label column 'label' holds a single class \('x'\): a classifier needs at least 2"),
    ("label-float", "fractional labels without --problem_type regression", lambda t: csv_run(t, ["a,0.5", "b,1.5"]),
     ValueError, r"holds the non-integral number 0.5 at row 0 .*pass `--problem_type regression`"),
    ("label-list", "list labels without --problem_type multi_label_classification",
     lambda t: jsonl_run(t, [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["x"]}]),
     ValueError, r"holds a list \(\['x', 'y'\]\) at row 0 .*pass `--problem_type multi_label_classification`"),
    ("label-mixed", "1 and \"1\" in one label column (JSON)",
     lambda t: jsonl_run(t, [{"text": "a", "label": 1}, {"text": "b", "label": "1"}]),
     ValueError, r"label column 'label' mixes numbers and strings \(1 at row 0, '1' at row 1, 0-based\)"),
    ("label-rare-class", "a class too rare for a stratified validation split",
     lambda t: csv_run(t, ["a,x"] * 9 + ["b,y"]),
     ValueError, r"classes with fewer than 2 rows \('y' \(1 row\)\); a stratified 10% validation split needs at "
                 r"least 2 rows per class"),
    ("no-validation", "evaluation during training, no validation data, carving switched off",
     lambda t: csv_run(t, ["a,x", "b,y"] * 5, "--eval_strategy", "epoch", "--validation_split_percentage", "0"),
     ValueError, r"The run needs a validation split \(`--eval_strategy epoch` evaluates on it during training\) and the "
                 r"data has none, but `--validation_split_percentage` is 0.0"),
    ("multi-label-value", "a number in a multi-label column",
     lambda t: jsonl_run(t, [{"text": "a", "label": ["x"]}, {"text": "b", "label": 3}],
                         "--problem_type", "multi_label_classification"),
     ValueError, r"holds 3 at row 1 .*multi-label classification needs a list of labels per row"),
    ("test-split", "--test_split naming a split the data does not have",
     lambda t: classifier_run(t, "--test_split", "dev"),
     ValueError, r"`--test_split`='dev' is not a labelled split of the data other than train; its splits are "
                 r"\['train', 'test'\]"),
    ("regression-value", "a word in a regression column",
     lambda t: csv_run(t, ["a,0.5", "b,high"], "--problem_type", "regression"),
     ValueError, r"holds 'high' \(str\) at row 1 .*regression needs a finite number in every row"),
    # Search
    ("search-parameter", "a search space with an unknown parameter",
     lambda t: search_run(t, space={"gaam_heads": [1, 2]}),
     ValueError, r"search space parameters \['gaam_heads'\] are neither `TrainingArguments` fields nor fields"),
    ("search-sampler", "sampler: bayes", lambda t: search_run(t, sampler="bayes"),
     ValueError, r"`sampler`='bayes' is not known; accepted: grid, random, tpe"),
    ("search-grid-range", "a grid over a range", lambda t: search_run(t, space={"learning_rate": {"low": 1, "high": 2}}),
     ValueError, r"a grid needs a list of values for every parameter"),
]


@pytest.mark.parametrize("case, mistake, call, error, message", CASES, ids=[case[0] for case in CASES])
def test_mistake_gets_a_clear_error(case, mistake, call, error, message, tmp_path):
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert not (tmp_path / "out" / "trainer_state.json").exists()


def test_every_case_is_a_row_of_the_documented_table():
    table = (ROOT / "docs" / "errors.md").read_text()
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(case[0] for case in CASES)
