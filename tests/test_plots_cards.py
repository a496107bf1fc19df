"""Pictures and cards: what a reader of an output folder or a Hub page sees. The metadata is read back with
huggingface_hub's own card classes; the pictures are checked for the size and content a reader needs (and were
opened and looked at when they changed)."""

import enum
import os

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import SchedulerType

import hf_heads
from hf_heads.gaam.importance import ImportanceFactors
from hf_heads.hub import (
    build_model_card,
    is_hub_id,
    normalised_axis_name,
    plot_importance_heatmap,
    plot_loss_curves,
    plot_search_trials,
)

OUT = os.environ.get("HF_HEADS_PICTURES")  # set it to keep the pictures for a look


def picture_path(tmp_path, name):
    return os.path.join(OUT, name) if OUT else tmp_path / name


def drawn(path) -> np.ndarray:
    """The picture as RGB; fails if it is blank."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert pixels.std() > 10, f"{path} is blank"
    return pixels


def test_loss_curves_show_training_and_validation_of_a_short_run(tmp_path):
    log = [{"step": step, "loss": 1.6 / step ** 0.3} for step in range(1, 13)]
    log += [{"step": step, "eval_loss": 1.5 / step ** 0.25} for step in (4, 8, 12)]
    path = plot_loss_curves(log, picture_path(tmp_path, "loss_curves.png"), title="bbc: training and validation loss")
    pixels = drawn(path)
    assert pixels.shape[:2] == (504, 840)
    # Both series are drawn in their colours (matplotlib's first two: blue, orange).
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    assert (np.abs(pixels - blue).sum(-1) < 40).sum() > 200
    assert (np.abs(pixels - orange).sum(-1) < 40).sum() > 100


def test_loss_curves_of_a_run_that_logged_nothing_say_so(tmp_path):
    drawn(plot_loss_curves([], tmp_path / "empty.png"))


def gaam_gpt2(axis):
    config = hf_heads.GaamGPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, gaam_norm_axis=axis,
                                     bos_token_id=1, eos_token_id=1)
    return hf_heads.GaamGPT2Model(config)


def test_the_heatmap_axis_is_named_for_what_gaam_normalises():
    assert normalised_axis_name(gaam_gpt2("features")) == "hidden feature"
    assert normalised_axis_name(gaam_gpt2("sequence")) == "token position"
    headed = hf_heads.HeadedConfig(backbone_config=hf_heads.GaamGPT2Config(n_layer=2, n_embd=32, n_head=2),
                                   head_type="gaam_layers", num_labels=2)
    assert normalised_axis_name(hf_heads.HeadedModelForSequenceClassification(headed)).startswith("backbone layer")


@pytest.mark.parametrize("width, rows, name", [(768, 12, "importance_features.png"), (7, 1, "importance_layers.png")])
def test_the_importance_heatmap_is_legible_whatever_the_axis_length(tmp_path, width, rows, name):
    generator = torch.Generator().manual_seed(0)
    factors = ImportanceFactors(
        names=[f"transformer.h.{index}.gaam" for index in range(rows)] if rows > 1 else ["head.gaam"],
        factors=[torch.rand(width, generator=generator) for _ in range(rows)],
        per_head=[torch.rand(2, generator=generator) for _ in range(rows)],
    )
    axis = "hidden feature" if width > 100 else "backbone layer (0 = embeddings)"
    pixels = drawn(plot_importance_heatmap(factors, picture_path(tmp_path, name), axis_name=axis))
    height, image_width = pixels.shape[:2]
    assert image_width == 960 and height >= 336  # not a 1680x240 strip
    assert image_width / height < 3


def test_the_search_plot_labels_each_trial_with_its_parameters(tmp_path):
    rows = [
        {"trial": 0, "gaam_num_gaussians": 5, "gaam_num_heads": 4, "learning_rate": 1e-3, "eval_accuracy": 0.81,
         "state": "complete"},
        {"trial": 1, "gaam_num_gaussians": 10, "gaam_num_heads": 8, "learning_rate": 3e-4, "eval_accuracy": 0.86,
         "state": "complete"},
        {"trial": 2, "gaam_num_gaussians": 20, "gaam_num_heads": 16, "learning_rate": 1e-4, "eval_accuracy": 0.42,
         "state": "pruned"},
    ]
    path = plot_search_trials(rows, "eval_accuracy", ["gaam_num_gaussians", "gaam_num_heads", "learning_rate"],
                              picture_path(tmp_path, "search_results.png"))
    pixels = drawn(path)
    orange, grey = np.array([255, 127, 14]), np.array([127, 127, 127])
    assert (np.abs(pixels - orange).sum(-1) < 30).sum() > 500  # the best trial's bar
    assert (np.abs(pixels - grey).sum(-1) < 30).sum() > 200  # the pruned trial's bar


# --- cards ----------------------------------------------------------------------------------------------------------

def card(tmp_path, **overrides) -> ModelCard:
    fields = dict(
        model_name="bbc-gaam", pipeline_tag="text-classification", model_type="gaam_gpt2",
        dataset_name="SetFit/bbc-news",
        results={"test": {"accuracy": 0.93, "macro_f1": 0.925}, "validation": {"loss": 0.31}},
        splits={"validation": "10% of the training rows, stratified (carved by the recipe)",
                "test": "the source's test split"},
        hyperparameters={"lr_scheduler_type": SchedulerType.COSINE, "learning_rate": 1e-3},
        base_model=str(tmp_path), license="mit",
    )
    fields.update(overrides)
    path = tmp_path / "README.md"
    build_model_card(**fields).save(path)
    return ModelCard.load(path)  # what the Hub reads


def test_card_metadata_reads_back_with_huggingface_hub(tmp_path):
    loaded = card(tmp_path)
    data = loaded.data
    assert data.license == "mit" and data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.base_model is None  # a local folder is no Hub id
    assert data.datasets == ["SetFit/bbc-news"]
    results = {(r.dataset_split, r.metric_type, r.metric_name): r.metric_value for r in data.eval_results}
    assert results == {("test", "accuracy", "accuracy"): 0.93, ("test", "f1", "macro-F1"): 0.925,
                       ("validation", "loss", "loss"): 0.31}
    assert "| `lr_scheduler_type` | `cosine` |" in loaded.text
    assert "SchedulerType" not in loaded.text
    assert "10% of the training rows, stratified (carved by the recipe)" in loaded.text
    assert f"from a local checkpoint (`{tmp_path.name}`)" in loaded.text and str(tmp_path) not in loaded.text


def test_a_hub_base_model_is_linked_and_an_lm_names_its_held_out_split(tmp_path):
    data = card(tmp_path, base_model="openai-community/gpt2", pipeline_tag="text-generation",
                results={"validation": {"loss": 1.32, "bits_per_character": 1.9}}, splits={}).data
    assert data.base_model == "openai-community/gpt2"
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert {r.metric_name for r in data.eval_results} == {"loss", "bits per character"}


@pytest.mark.parametrize("name, expected", [
    ("gpt2", True), ("openai-community/gpt2", True), ("./runs/lm", False), ("/abs/path", False),
    ("runs/lm/checkpoint-5", False), ("a b", False),
])
def test_what_counts_as_a_hub_id(name, expected):
    assert is_hub_id(name) is expected


def test_plain_settings_are_written_as_typed(tmp_path):
    class Strategy(enum.Enum):
        EPOCH = "epoch"

    text = card(tmp_path, hyperparameters={"eval_strategy": Strategy.EPOCH, "output_dir": tmp_path}).text
    assert "| `eval_strategy` | `epoch` |" in text


@pytest.mark.parametrize("license", ["Apache 2.0", "MIT"])
def test_a_license_the_hub_would_refuse_is_refused_before_training(tmp_path, license):
    with pytest.raises(ValueError, match=f"`--license`='{license}' is not a Hub license identifier.*apache-2.0"):
        card(tmp_path, license=license)
