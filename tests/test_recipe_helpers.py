"""What the recipes share: config overrides, output-folder safety, resume resolution."""

import pytest

from hf_heads.training.arguments import parse_overrides
from hf_heads.training.outputs import refuse_existing_model, resolve_resume_checkpoint


def test_overrides_read_json_values_and_keep_lists_whole():
    assert parse_overrides("gaam_layers=[0,1],n_layer=2,gaam_eps=1e-6,scale_attn_weights=false,name=x") == {
        "gaam_layers": [0, 1], "n_layer": 2, "gaam_eps": 1e-6, "scale_attn_weights": False, "name": "x"
    }
    assert parse_overrides(None) == {} and parse_overrides("") == {}


def test_a_folder_with_a_model_is_refused_unless_overwriting_or_resuming(tmp_path):
    refuse_existing_model(tmp_path, overwrite=False, resuming=False)  # empty: fine
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"already holds a model \(model.safetensors\)"):
        refuse_existing_model(tmp_path, overwrite=False, resuming=False)
    refuse_existing_model(tmp_path, overwrite=True, resuming=False)
    refuse_existing_model(tmp_path, overwrite=False, resuming=True)


def test_resume_true_picks_the_newest_complete_checkpoint(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False), (100, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-100" / "trainer_state.json").unlink()  # a kill while saving: incomplete
    assert resolve_resume_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-10"), tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume_checkpoint(None, tmp_path) is None
    with pytest.raises(ValueError, match="is not a complete checkpoint folder"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-30"), tmp_path)


def test_console_entry_points_and_metric_modules_ship_with_the_package():
    """An installed wheel runs the recipes (`hf-heads-*` commands) and finds its `evaluate` metric modules."""
    import importlib
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert set(scripts) == {"hf-heads-train-classifier", "hf-heads-pretrain-lm", "hf-heads-search"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))
    patterns = project["tool"]["setuptools"]["package-data"]["hf_heads.training.metrics"]
    folder = root / "hf_heads" / "training" / "metrics"
    shipped = {path for pattern in patterns for path in folder.glob(pattern)}
    assert {folder / name / f"{name}.py" for name in ("single_label", "multi_label", "regression")} <= shipped


def test_shipped_metrics_load_offline_through_evaluate():
    from hf_heads.training.metrics import load_metric

    single = load_metric("single_label").compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2],
                                                 confusion_matrix_labels=3)
    assert single["accuracy"] == 0.75 and single["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert single["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    multi = load_metric("multi_label").compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])
    assert multi["micro_f1"] == pytest.approx(0.8) and multi["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    regression = load_metric("regression").compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 3.0, 3.0])
    assert regression["mse"] == pytest.approx(2 / 3) and regression["mae"] == pytest.approx(2 / 3)
    from scipy.stats import pearsonr

    assert regression["pearson_r"] == pytest.approx(pearsonr([1.0, 2.0, 4.0], [1.0, 3.0, 3.0]).statistic, rel=1e-9)
