"""`recipes/search.py`: a 2×2 grid over the classifier, TPE over the LM recipe, and search files that are wrong."""

import csv
import json
from pathlib import Path

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[1]
from hf_heads.training import search  # noqa: E402


CLASSIFIER = {
    "model_type": "gaam_gpt2", "config_overrides": "n_layer=1,n_embd=32,n_head=4,classifier_pooling=mean",
    "tokenizer_vocab_size": 300, "max_length": 32, "dataset_name": "bbc_news", "max_train_samples": 48,
    "max_eval_samples": 24, "num_train_epochs": 1, "per_device_train_batch_size": 16, "report_to": "none",
    "use_cpu": True, "eval_strategy": "epoch", "save_strategy": "no",
}


def write_search(tmp_path, **settings) -> str:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.fixture(scope="module")
def grid_search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    path = write_search(
        folder, recipe="train_classifier", sampler="grid",
        space={"gaam_num_heads": [1, 2], "learning_rate": [1e-3, 3e-3]},
        arguments={**CLASSIFIER, "output_dir": str(folder / "out")},
    )
    rows = search.main([path])
    return folder / "out", rows


def test_grid_runs_every_point_once_and_writes_its_table(grid_search):
    output_dir, rows = grid_search
    assert len(rows) == 4
    assert sorted((row["gaam_num_heads"], row["learning_rate"]) for row in rows) == [
        (1, 1e-3), (1, 3e-3), (2, 1e-3), (2, 3e-3)
    ]
    with open(output_dir / "search_results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["state"] for row in table] == ["complete"] * 4
    assert all(0 <= float(row["eval_accuracy"]) <= 1 and float(row["wall_seconds"]) > 0 for row in table)
    assert len((output_dir / "search_results.md").read_text().splitlines()) == 2 + 4
    assert (output_dir / "search_results.png").stat().st_size > 0


def test_each_trial_trains_the_model_its_parameters_describe(grid_search):
    output_dir, rows = grid_search
    for row in rows:
        config = json.loads((output_dir / "trials" / f"trial-{row['trial']}" / "config.json").read_text())
        assert config["gaam_num_heads"] == row["gaam_num_heads"]
        # The GAAM parameters are stacked over heads: their shape shows the head count that was trained.
        from safetensors import safe_open

        with safe_open(output_dir / "trials" / f"trial-{row['trial']}" / "model.safetensors", "pt") as weights:
            name = next(key for key in weights.keys() if key.endswith("gaam.c"))
            assert weights.get_tensor(name).shape[0] == row["gaam_num_heads"]


def test_best_model_is_the_best_trial_and_loads(grid_search):
    output_dir, rows = grid_search
    import hf_heads  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    best = max(rows, key=lambda row: row["eval_accuracy"])
    config = json.loads((output_dir / "best_model" / "config.json").read_text())
    assert config["gaam_num_heads"] == best["gaam_num_heads"]
    AutoModelForSequenceClassification.from_pretrained(output_dir / "best_model")
    AutoTokenizer.from_pretrained(output_dir / "best_model")


def test_tpe_over_the_lm_recipe(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the cat sat on the mat and the dog ran"] * 200))
    path = write_search(
        tmp_path, recipe="pretrain_lm", sampler="tpe", n_trials=2, pruner="none",
        space={"n_embd": [32, 64], "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        arguments={
            "model_type": "gpt2", "tokenizer": "char", "config_overrides": "n_layer=1,n_head=4",
            "train_file": str(text), "block_size": 32, "max_steps": 2, "per_device_train_batch_size": 8,
            "report_to": "none", "use_cpu": True, "output_dir": str(tmp_path / "out"),
        },
    )
    rows = search.main([path])
    assert len(rows) == 2 and all(row["eval_loss"] > 0 for row in rows)
    assert all(1e-4 <= row["learning_rate"] <= 1e-2 for row in rows)


def test_parameters_that_move_together(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the cat sat on the mat"] * 200))
    path = write_search(
        tmp_path, recipe="pretrain_lm", sampler="grid", space={"n_layer,n_head": [[1, 2], [2, 4]]},
        arguments={
            "model_type": "gpt2", "tokenizer": "char", "config_overrides": "n_embd=32,n_head=2", "train_file": str(text),
            "block_size": 16, "max_steps": 1, "report_to": "none", "use_cpu": True, "output_dir": str(tmp_path / "o"),
        },
    )
    rows = search.main([path])
    assert sorted((row["n_layer"], row["n_head"]) for row in rows) == [(1, 2), (2, 4)]
    for row in rows:
        config = json.loads((tmp_path / "o" / "trials" / f"trial-{row['trial']}" / "config.json").read_text())
        assert (config["n_layer"], config["n_head"]) == (row["n_layer"], row["n_head"])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(space={"gaam_num_hedas": [1, 2]}), r"\['gaam_num_hedas'\] are neither"),
        (dict(sampler="bayes"), "`sampler`='bayes'"),
        (dict(space={"learning_rate": {"low": 1e-4, "high": 1e-2}}), "a grid needs a list"),
        (dict(space={"learning_rate": []}), "empty list"),
        (dict(sampler="random", space={"learning_rate": {"low": 1e-2, "high": 1e-4}}, n_trials=2), "must be below"),
        (dict(sampler="random"), "`n_trials` must be a positive integer"),
        (dict(metric="eval_acc"), "`metric`='eval_acc'"),
        (dict(recipe="train_gan"), "`recipe`='train_gan'"),
        (dict(trials=3), r"Unknown key in search file .*: trials \(did you mean n_trials\?\)"),
        (dict(space={"gaam_num_gaussians,gaam_num_heads": [[5, 4], [10]]}), "a list of 2"),
    ],
)
def test_bad_search_files_fail_before_training(change, message, tmp_path):
    settings = dict(
        recipe="train_classifier", sampler="grid", space={"gaam_num_heads": [1, 2]},
        arguments={**CLASSIFIER, "output_dir": str(tmp_path / "out")},
    )
    path = write_search(tmp_path, **{**settings, **change})
    with pytest.raises(ValueError, match=message):
        search.main([path])
    assert not (tmp_path / "out" / "trials").exists()


def test_a_folder_that_holds_a_search_is_refused(grid_search, tmp_path):
    output_dir, _ = grid_search
    path = write_search(
        tmp_path, recipe="train_classifier", sampler="grid", space={"gaam_num_heads": [1]},
        arguments={**CLASSIFIER, "output_dir": str(output_dir)},
    )
    with pytest.raises(ValueError, match="already holds a search"):
        search.main([path])
