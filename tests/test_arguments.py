"""Arguments as people use them: `--help` for every recipe, a YAML file plus overriding flags, misspelt names answered
with the closest valid one, configuration fields the recipe sets refused, defaults derived from the run."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_heads.models.headed.heads import HEADS
from hf_heads.training.classification import ClassifierRecipe, main
from hf_heads.training.language_modeling import LanguageModelRecipe


ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model_type", "gaam_gpt2", "--config_overrides", "n_layer=1,n_embd=32,n_head=2,gaam_num_heads=2",
        "--tokenizer_vocab_size", "300", "--max_length", "16", "--report_to", "none", "--use_cpu", "true",
        "--save_strategy", "no"]


def test_help_of_the_classifier_script():
    """The script as a user runs it (a `%` in a help string once crashed argparse here)."""
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for heading in ("model:", "head (and what trains):", "data:", "training (transformers TrainingArguments):",
                    "examples:", "The same arguments in a YAML", "--validation_split_percentage"):
        assert heading in result.stdout


@pytest.mark.parametrize(
    "main_of, expected",
    [
        ("language_modeling", ["hf-heads-pretrain-lm", "model:", "data:", "training (transformers TrainingArguments):",
                               "examples:", "The same arguments in a YAML", "--block_size"]),
        ("search", ["hf-heads-search", "search_file", "sampler:", "space:", "arguments:"]),
    ],
)
def test_help_of_the_other_recipes(main_of, expected, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"hf_heads.training.{main_of}").main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and all(text in out for text in expected), out[:3000]


def test_help_through_main_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "hf-heads-train-classifier" in capsys.readouterr().out


def test_yaml_file_plus_flags_that_override_it(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(
        {"model_type": "gpt2", "dataset_name": "bbc_news", "num_train_epochs": 3, "learning_rate": 0.001,
         "output_dir": str(tmp_path / "a"), "eval_strategy": "epoch", "report_to": "none"}))
    recipe = ClassifierRecipe.from_argv([str(tmp_path / "run.yaml"), "--num_train_epochs", "1", "--output_dir",
                                         str(tmp_path / "b")])
    args = recipe.training_args
    assert (args.num_train_epochs, args.learning_rate, args.output_dir, args.eval_strategy) == (
        1, 0.001, str(tmp_path / "b"), "epoch")
    assert recipe.data_args.dataset_name == "bbc_news"


def test_rerunning_a_yaml_into_its_folder_needs_only_a_flag(tmp_path):
    config = {"model_type": "gpt2", "config_overrides": "n_layer=1,n_embd=32,n_head=2", "tokenizer_vocab_size": 300,
              "max_length": 16, "dataset_name": "bbc_news", "max_train_samples": 16, "max_eval_samples": 8,
              "max_steps": 1, "output_dir": str(tmp_path / "out"), "report_to": "none", "save_strategy": "no"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main([str(tmp_path / "run.yaml")])
    with pytest.raises(ValueError, match="already holds a model"):
        main([str(tmp_path / "run.yaml")])
    main([str(tmp_path / "run.yaml"), "--overwrite_output_dir", "true"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--lerning_rate", "1e-3"], r"Unknown argument: --lerning_rate \(did you mean --learning_rate\?\)"),
        (["--config_overrides", "gaam_num_head=8,classifer_pooling=mean"],
         r"`--config_overrides` has 2 wrong entries:\n  - gaam_num_head=8: not a field of the model's configuration "
         r"\(did you mean gaam_num_heads\?\)\n  - classifer_pooling='mean': not a field of the model's configuration "
         r"\(did you mean classifier_pooling\?\)"),
        (["--config_overrides", "num_labels=3"],
         r"`--config_overrides` has 1 wrong entry:\n  - num_labels=3: the recipe sets it itself \(it comes from the "
         r"data's labels and --problem_type\)"),
        (["--config_overrides", "vocab_size=100"], r"vocab_size=100: the recipe sets it itself \(it comes from the "
                                                   r"tokenizer\)"),
        (["--problem_type", "multi_label"], r"`--problem_type`='multi_label' is not supported; accepted: "
                                            r"single_label_classification, multi_label_classification, regression"),
        (["--label_delimiter", "|"],
         r"`--label_delimiter` splits multi-label cells: pass `--problem_type multi_label"),
        (["--text_column", "label"], r"`--text_column` and `--label_column` are both 'label'"),
        (["--max_train_samples", "0"], r"`--max_train_samples` must be a positive number of rows .*got 0"),
        (["--max_eval_samples", "0"], r"`--max_eval_samples` must be a positive number of rows .*got 0"),
    ],
)
def test_argument_mistakes_are_named_before_any_data_is_read(tmp_path, arguments, message):
    argv = [*TINY, "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")]
    for flag, value in zip(arguments[::2], arguments[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    with pytest.raises(ValueError, match=message):
        main(argv)
    assert not (tmp_path / "out").exists()


def test_unknown_yaml_key_names_the_closest(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"model_type": "gpt2", "num_train_epoch": 1}))
    message = r"Unknown key in .*run.yaml: num_train_epoch \(did you mean num_train_epochs\?\)"
    with pytest.raises(ValueError, match=message):
        main([str(tmp_path / "run.yaml")])


def test_head_fields_are_checked_against_the_head_configuration(tmp_path):
    recipe = ClassifierRecipe.from_argv([
        "--model_name_or_path", str(tmp_path), "--head_type", "attention", "--config_overrides", "head_num_head=2",
        "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match=r"head_num_head=2: not a field of the model's configuration \(did you mean "
                                         r"head_num_heads\?\)"):
        recipe.check_arguments()


def test_a_frozen_head_trains_with_its_own_learning_rate_unless_given(tmp_path):
    common = ["--model_name_or_path", str(tmp_path), "--head_type", "gaam_layers", "--freeze_backbone", "true",
              "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")]
    recipe = ClassifierRecipe.from_argv(common)
    recipe.check_arguments()
    assert recipe.training_args.learning_rate == HEADS["gaam_layers"].default_learning_rate
    recipe = ClassifierRecipe.from_argv([*common, "--learning_rate", "3e-4"])
    recipe.check_arguments()
    assert recipe.training_args.learning_rate == 3e-4


@pytest.mark.parametrize("steps, logging_steps, points", [(5, None, 5), (60, None, 20), (6, 3, 2)])
def test_every_run_logs_its_training_loss_and_says_where_it_went(tmp_path, capsys, steps, logging_steps, points):
    given = [] if logging_steps is None else ["--logging_steps", str(logging_steps)]
    main([*TINY, "--dataset_name", "bbc_news", "--max_train_samples", "16", "--max_eval_samples", "8",
          "--per_device_train_batch_size", "4", "--max_steps", str(steps), *given,
          "--output_dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert out.count("{'loss': ") == points
    assert f"Outputs in {(tmp_path / 'out').resolve()}:" in out and "model.safetensors" in out.split("Outputs in")[-1]


def test_language_model_recipe_reads_yaml_plus_flags(tmp_path):
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump({"model_type": "gpt2", "tokenizer": "char", "block_size": 64,
                                                      "train_file": "text.txt", "max_steps": 100}))
    recipe = LanguageModelRecipe.from_argv([str(tmp_path / "lm.yaml"), "--max_steps", "5", "--output_dir", "x"])
    assert recipe.training_args.max_steps == 5 and recipe.data_args.block_size == 64


@pytest.mark.parametrize(
    "overrides,message",
    [
        ("n_layer=one", r"`--config_overrides` has 1 wrong entry:\n  - n_layer='one': .*n_layer.*int"),
        ("gaam_normalization=softmax", r"- gaam_normalization='softmax': `gaam_normalization`='softmax' is not "
                                       r"supported; accepted values: "),
    ],
)
def test_override_values_of_the_wrong_type_are_named_before_any_work(tmp_path, overrides, message):
    recipe = ClassifierRecipe.from_argv(["--model_type", "gaam_gpt2", "--config_overrides", overrides,
                                         "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match=message):
        recipe.check_arguments()
    assert not (tmp_path / "out").exists()


def test_every_wrong_override_is_named_in_one_error_before_any_data_is_read(tmp_path):
    """Five wrong entries, five lines (name, value, what is accepted), the last one wrong only with GPT-2's default
    n_head; the data file does not even exist, so the error comes before any data is read."""
    overrides = "gaam_num_head=8,n_layer=one,num_labels=3,gaam_normalization=softmax,n_embd=64"
    with pytest.raises(ValueError) as caught:
        main(["--model_type", "gaam_gpt2", "--config_overrides", overrides, "--train_file", str(tmp_path / "no.csv"),
              "--output_dir", str(tmp_path / "out")])
    lines = str(caught.value).splitlines()
    assert lines[0] == "`--config_overrides` has 5 wrong entries:"
    assert lines[1] == "  - gaam_num_head=8: not a field of the model's configuration (did you mean gaam_num_heads?)"
    assert lines[2].startswith("  - n_layer='one': ") and "int" in lines[2]
    assert lines[3] == ("  - num_labels=3: the recipe sets it itself (it comes from the data's labels and "
                        "--problem_type)")
    assert lines[4].startswith("  - gaam_normalization='softmax': `gaam_normalization`='softmax' is not supported; "
                               "accepted values: ")
    assert lines[5].startswith("  - n_embd=64 and n_head=12 (not overridden): n_embd must be a multiple of n_head")
    assert len(lines) == 6 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "recipe, overrides, message",
    [
        ("classification", "n_layer=1,n_embd=30,n_head=4",
         "n_embd=30 and n_head=4: n_embd must be a multiple of n_head (each attention head takes n_embd / n_head "
         "features); with n_embd=30, n_head 3 or 5 (divisors of 30: 1, 2, 3, 5, 6, 10, 15, 30); with n_head=4, "
         "n_embd 28 or 32"),
        # n_head left at GPT-2's 12: the message says it was not overridden.
        ("language_modeling", "n_layer=1,n_embd=100",
         "n_embd=100 and n_head=12 (not overridden): n_embd must be a multiple of n_head (each attention head takes "
         "n_embd / n_head features); with n_embd=100, n_head 10 or 20 (divisors of 100: 1, 2, 4, 5, 10, 20, 25, 50, "
         "100); with n_head=12, n_embd 96 or 108"),
    ],
)
def test_heads_that_do_not_divide_n_embd_are_named_with_what_fits_before_any_data(tmp_path, recipe, overrides,
                                                                                  message):
    import importlib

    with pytest.raises(ValueError) as caught:
        importlib.import_module(f"hf_heads.training.{recipe}").main([
            "--model_type", "gpt2", "--config_overrides", overrides, "--train_file", str(tmp_path / "no.txt"),
            "--output_dir", str(tmp_path / "out")])
    assert str(caught.value) == f"`--config_overrides` has 1 wrong entry:\n  - {message}"


# ----- user mistakes on the command line: one `error:` line, exit status 2, no traceback


def test_a_mistake_on_the_command_line_prints_one_error_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--model_type", "gpt2", "--config_overrides",
         "n_embd=30,n_head=4,n_layr=1", "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("hf-heads-train-classifier: error: `--config_overrides` has 2 wrong entries:\n"
                                    "  - n_layr=1: not a field of the model's configuration (did you mean n_layer?)"
                                    ), result.stderr[-3000:]


@pytest.mark.parametrize(
    "module, arguments, message",
    [
        ("classification", ["--model_type", "gpt2", "--train_file", "{tmp}/missing.csv", "--output_dir", "{tmp}/o"],
         "hf-heads-train-classifier: error: `--train_file` '{tmp}/missing.csv' does not exist.\n"),
        ("classification", ["--model_type", "gpt2", "--train_file", "{tmp}/ragged.csv", "--output_dir", "{tmp}/o"],
         "hf-heads-train-classifier: error: `--train_file` '{tmp}/ragged.csv': line 3 has 3 fields, where the header "
         "(line 1) has 2"),
        ("classification", ["--model_name_or_path", "{tmp}/no-model", "--dataset_name", "bbc_news", "--output_dir",
                            "{tmp}/o"],
         "hf-heads-train-classifier: error: `--model_name_or_path`='{tmp}/no-model': no such folder (give a model "
         "folder or a Hub id).\n"),
        # transformers' own check of TrainingArguments values that do not fit together
        ("classification", ["--model_type", "gpt2", "--dataset_name", "bbc_news", "--load_best_model_at_end", "true",
                            "--eval_strategy", "epoch", "--save_strategy", "steps", "--output_dir", "{tmp}/o"],
         "hf-heads-train-classifier: error: The arguments do not fit together: --load_best_model_at_end requires the "
         "save and eval strategy to match"),
        ("language_modeling", ["--model_type", "gpt2", "--lerning_rate", "1", "--output_dir", "{tmp}/o"],
         "hf-heads-pretrain-lm: error: Unknown argument: --lerning_rate (did you mean --learning_rate?)"),
        ("search", ["{tmp}/search.yaml"], "hf-heads-search: error: search file '{tmp}/search.yaml' does not exist.\n"),
    ],
)
def test_console_commands_answer_user_mistakes_with_one_line_and_status_2(tmp_path, monkeypatch, capsys, module,
                                                                          arguments, message):
    import importlib

    (tmp_path / "ragged.csv").write_text("text,label\na,x\nb,y,z\n")
    command = importlib.import_module(f"hf_heads.training.{module}").command_line
    monkeypatch.setattr(sys, "argv", ["prog", *(argument.format(tmp=tmp_path) for argument in arguments)])
    assert command() == 2
    assert capsys.readouterr().err.startswith(message.format(tmp=tmp_path))


def test_library_callers_still_catch_value_errors_and_bugs_keep_their_traceback(tmp_path):
    from hf_heads.training.errors import MissingFileError, RecipeError, run_from_command_line

    with pytest.raises(ValueError):  # a `RecipeError`
        main(["--model_type", "bert", "--dataset_name", "bbc_news", "--output_dir", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError):
        main(["--model_type", "gpt2", "--train_file", str(tmp_path / "no.csv"), "--output_dir", str(tmp_path / "o")])
    assert issubclass(MissingFileError, RecipeError) and issubclass(RecipeError, ValueError)

    def buggy_main():
        raise ValueError("a bug, not a user mistake")

    with pytest.raises(ValueError, match="a bug"):
        run_from_command_line(buggy_main, "prog")
    with pytest.raises(SystemExit) as exit_:  # --help (argparse) exits as before
        run_from_command_line(lambda: main(["--help"]), "prog")
    assert exit_.value.code == 0
