"""Every YAML shipped in `recipes/configs/` parses with its recipe and passes the checks that run before training."""

import sys
from pathlib import Path

import pytest
import yaml
from transformers import HfArgumentParser, TrainingArguments


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import pretrain_lm  # noqa: E402
import search  # noqa: E402
import train_classifier  # noqa: E402


CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
RECIPE_OF = {"train_classifier": train_classifier, "pretrain_lm": pretrain_lm}


def recipe_for(config: dict):
    if "recipe" in config:
        return RECIPE_OF[config["recipe"]], config["arguments"]
    is_lm = "block_size" in config or "tokenizer" in config
    return (pretrain_lm if is_lm else train_classifier), config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path, tmp_path):
    config = yaml.safe_load(path.read_text())
    if "recipe" in config:
        search.read_settings(str(path))
    recipe, arguments = recipe_for(config)
    arguments = {**arguments, "output_dir": str(tmp_path / "out")}
    parser = HfArgumentParser((recipe.ModelArguments, recipe.DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_dict(arguments, allow_extra_keys=False)
    recipe.check_arguments(model_args, data_args, training_args)


def test_the_design_experiments_are_all_shipped():
    names = {path.name for path in CONFIGS}
    assert {"ag_news_gaam_grid.yaml", "20newsgroups_attention_head.yaml", "sst2_lm.yaml",
            "sst2_last_token_classifier.yaml", "text8_char_grid.yaml", "text8_char_lm.yaml"} <= names
