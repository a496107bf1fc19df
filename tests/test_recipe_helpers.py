"""What the recipes share: config overrides, packaging, metrics (the output folder's checks: tests/test_runs.py)."""

import pytest

from hf_heads.training.arguments import parse_overrides


def test_overrides_read_json_values_and_keep_lists_whole():
    assert parse_overrides("gaam_layers=[0,1],n_layer=2,gaam_eps=1e-6,scale_attn_weights=false,name=x") == {
        "gaam_layers": [0, 1], "n_layer": 2, "gaam_eps": 1e-6, "scale_attn_weights": False, "name": "x"
    }
    assert parse_overrides(None) == {} and parse_overrides("") == {}


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
