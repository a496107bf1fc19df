"""`recipes/train_classifier.py` end to end on tiny settings: flags, YAML, Hub-ready output, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard


ROOT = Path(__file__).resolve().parents[1]
from hf_heads.training import classification as train_classifier  # noqa: E402


TINY = [
    "--model_type", "gaam_gpt2",
    "--config_overrides", "n_layer=2,n_embd=32,n_head=4,gaam_num_heads=2,classifier_pooling=mean",
    "--tokenizer_vocab_size", "300", "--max_length", "32", "--dataset_name", "bbc_news",
    "--max_train_samples", "48", "--max_eval_samples", "24", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "16", "--report_to", "none", "--logging_steps", "1", "--use_cpu", "true",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "model"
    metrics = train_classifier.main([*TINY, "--output_dir", str(output_dir)])
    return output_dir, metrics


def test_output_folder_is_ready_for_the_hub(trained):
    output_dir, metrics = trained
    for name in ("model.safetensors", "config.json", "modeling_gaam_gpt2.py", "gaam_layer.py", "tokenizer.json",
                 "all_results.json", "loss_curves.png", "confusion_matrix.png", "gaam_importance.png", "README.md"):
        assert (output_dir / name).is_file(), name
    assert not list(output_dir.glob("*.bin")), "weights are safetensors only"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_gaam_gpt2.")
    assert config["id2label"] == {"0": "business", "1": "entertainment", "2": "politics", "3": "sports", "4": "tech"}
    assert json.loads((output_dir / "all_results.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


def test_the_card_and_the_log_say_how_much_gaam_contributes(trained, capsys):
    # The recipe measures GAAM on held-out rows (an inert GAAM must be visible to the user), one row per GAAM layer.
    text = (trained[0] / "README.md").read_text()
    section = text.split("### GAAM contribution", 1)[1]
    assert "`transformer.h.0.gaam`" in section and "`transformer.h.1.gaam`" in section
    assert "with GAAM removed" in section and "did not run" not in section


def test_model_card_metadata_parses(trained):
    card = ModelCard.load(trained[0] / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert "hf-heads" in data.tags and data.datasets == ["bbc_news"]
    assert data.eval_results[0].metric_type == "accuracy"
    assert data.eval_results[0].metric_value == pytest.approx(trained[1]["test_accuracy"])
    assert "trust_remote_code=True" in card.text


def test_output_loads_without_hf_heads_and_with_pipeline(trained, run_without_hf_heads):
    output_dir, _ = trained
    import hf_heads  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    inputs = tokenizer(["Shares rose sharply in London", "The match ended in a draw"], padding=True, return_tensors="pt")
    expected = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()(**inputs).logits
    torch.save(dict(inputs), output_dir.parent / "inputs.pt")
    output = run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
        folder = {str(output_dir)!r}
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        logits = model(**torch.load({str(output_dir.parent / "inputs.pt")!r})).logits
        torch.save(logits, {str(output_dir.parent / "logits.pt")!r})
        classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder, trust_remote_code=True))
        print(classify("Shares rose sharply in London")[0]["label"])
        """
    )
    assert output.strip().splitlines()[-1] in {"business", "entertainment", "politics", "sports", "tech"}
    torch.testing.assert_close(torch.load(output_dir.parent / "logits.pt"), expected, rtol=0, atol=1e-6)


def test_yaml_file_gives_the_same_run_as_flags(tmp_path, trained):
    arguments = dict(zip(TINY[::2], TINY[1::2]))
    config = {flag.lstrip("-"): yaml.safe_load(value) for flag, value in arguments.items()}
    config["output_dir"] = str(tmp_path / "from_yaml")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    metrics = train_classifier.main([str(tmp_path / "run.yaml")])
    assert metrics["test_accuracy"] == trained[1]["test_accuracy"]
    assert metrics["train_loss"] == pytest.approx(trained[1]["train_loss"], rel=1e-6)


def test_headed_frozen_cached_run_on_a_local_csv(tmp_path):
    """A `headed` attention head on a local GPT-2 checkpoint, data from CSV files, cached frozen features."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_heads.tokenization import train_bpe_tokenizer

    texts = [f"{word} story number {i}" for i in range(30) for word in ("money", "football")]
    labels = ["finance", "sport"] * 30
    rows = ["text,topic"] + [f"{t},{l}" for t, l in zip(texts, labels)]
    (tmp_path / "train.csv").write_text("\n".join(rows[:41]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([rows[0]] + rows[41:]) + "\n")
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300, min_frequency=1)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=len(tokenizer), n_positions=64)).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    metrics = train_classifier.main([
        "--model_name_or_path", str(tmp_path / "lm"), "--head_type", "attention", "--freeze_backbone", "true",
        "--cache_backbone_features", "true", "--train_file", str(tmp_path / "train.csv"),
        "--test_file", str(tmp_path / "test.csv"), "--label_column", "topic", "--output_dir", str(tmp_path / "out"),
        "--num_train_epochs", "3", "--learning_rate", "0.01", "--report_to", "none", "--use_cpu", "true",
        "--max_length", "32",
    ])
    assert metrics["test_accuracy"] == 1.0  # one word decides the topic
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "headed" and config["id2label"] == {"0": "finance", "1": "sport"}


def test_daam_head_run_draws_its_importance_factor_in_the_card(tmp_path, trained):
    """The GAAM authors' head reports its gate per layer: the recipe draws it and the card shows it."""
    start, _ = trained
    train_classifier.main([
        "--model_name_or_path", str(start), "--head_type", "daam", "--freeze_backbone", "true",
        "--config_overrides", "daam_conv_channels=8", "--dataset_name", "bbc_news", "--max_train_samples", "32",
        "--max_eval_samples", "16", "--max_length", "32", "--num_train_epochs", "1", "--report_to", "none",
        "--use_cpu", "true", "--output_dir", str(tmp_path / "out"),
    ])
    assert (tmp_path / "out" / "gaam_importance.png").is_file()
    assert "gaam_importance.png" in (tmp_path / "out" / "README.md").read_text()


def test_frozen_gaam_gpt2_trains_only_gaam_and_the_head(tmp_path, trained):
    """The notebook's GAAM grid freezes GPT-2: a run from a checkpoint changes GAAM and `score`, nothing else."""
    from safetensors.torch import load_file

    start, _ = trained
    train_classifier.main([
        "--model_name_or_path", str(start), "--freeze_backbone", "true", "--dataset_name", "bbc_news",
        "--max_train_samples", "32", "--max_eval_samples", "16", "--max_length", "32", "--num_train_epochs", "1",
        "--learning_rate", "0.05", "--report_to", "none", "--use_cpu", "true", "--output_dir", str(tmp_path / "out"),
    ])
    before, after = load_file(start / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("score.") or ".gaam" in name for name in changed), changed
    assert any(".gaam." in name for name in changed) and "score.weight" in changed


def test_weight_init_applies_to_new_weights_only(tmp_path, trained):
    """`--weight_init` re-initialises the new `score` head of a checkpoint; loaded weights stay as they were."""
    from safetensors.torch import load_file

    from transformers import AutoTokenizer

    from hf_heads.training.labels import LabelSpace

    recipe = train_classifier.ClassifierRecipe.from_argv([
        "--model_name_or_path", str(trained[0]), "--weight_init", "orthogonal", "--ignore_mismatched_sizes", "true",
        "--dataset_name", "bbc_news",
        "--output_dir", str(tmp_path / "unused"),
    ])
    recipe.tokenizer = AutoTokenizer.from_pretrained(trained[0])
    recipe.labels = LabelSpace("single_label_classification", ["a", "b", "c"])  # 3 labels: a new `score`
    model = recipe.new_model()
    loaded = load_file(trained[0] / "model.safetensors")
    for name, parameter in model.state_dict().items():
        if name != "score.weight":
            torch.testing.assert_close(parameter, loaded[name], rtol=0, atol=0)
    score = model.score.weight.detach()
    torch.testing.assert_close(score @ score.T, torch.eye(3), atol=1e-5, rtol=0)  # orthogonal rows


@pytest.mark.parametrize(
    "change, message",
    [
        (["--weight_init", "zeros"], r"`--weight_init`='zeros' is not supported"),
        (["--text_column", "body"], r"no column 'body'; its columns are \['text', 'label'\]"),
        (["--model_type", "bert"], r"`--model_type`='bert' is not supported; accepted: gpt2, gaam_gpt2"),
        (["--head_type", "mean"], "give `--model_name_or_path` too"),
        (["--max_length", "100"],
         r"`--max_length`=100 \(given, or the recipe's default\) exceeds the model's 64 positions"),
        (["--config_overrides", "n_layer"], "is not `name=value`"),
        (["--cache_backbone_features", "true"], "applies to `headed` models"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, change, message):
    arguments = list(TINY)
    arguments[arguments.index("--config_overrides") + 1] += ",n_positions=64"
    for flag, value in zip(change[::2], change[1::2]):
        if flag in arguments:
            arguments[arguments.index(flag) + 1] = value
        else:
            arguments += [flag, value]
    with pytest.raises(ValueError, match=message):
        train_classifier.main([*arguments, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_existing_model_is_not_overwritten(trained):
    output_dir, _ = trained
    before = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a model.*--overwrite_output_dir"):
        train_classifier.main([*TINY, "--output_dir", str(output_dir)])
    assert (output_dir / "model.safetensors").read_bytes() == before


def test_two_process_accelerate_launch_writes_one_folder(tmp_path):
    output_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"), str(ROOT / "recipes" / "train_classifier.py"),
         *TINY, "--output_dir", str(output_dir), "--save_strategy", "no"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Process 1 of 2:" in result.stdout and "Process 2 of 2:" in result.stdout, result.stdout[-2000:]
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()


def test_a_failure_after_training_keeps_the_trained_model(tmp_path, monkeypatch, capsys):
    """The model and its results are saved before anything optional; a card that cannot be written loses nothing."""
    import hf_heads.hub.trainer_card

    def broken_card(*args, **kwargs):
        raise OSError("disk full while writing README.md")

    monkeypatch.setattr(hf_heads.hub.trainer_card, "build_model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        train_classifier.main([*TINY, "--output_dir", str(tmp_path / "out"), "--save_strategy", "no"])
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()
    assert "test_accuracy" in json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert "The model and all_results.json are saved in" in capsys.readouterr().out
