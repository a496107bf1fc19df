"""Benchmark scripts run in `--quick` mode so they cannot rot. No timing is asserted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
QUICK = {
    "gaam_op.py": [],
    "gaam_gpt2_step.py": [],
    "frozen_heads.py": [],
    "recipe_throughput.py": [],
    # The slow rows (GPT-2 training, the demo, LoRA) run in the slow suite.
    "quality.py": ["--rows", "tfidf", "frozen_minilm"],
}


def run_quick(tmp_path, script, extra):
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--results-dir", str(tmp_path), *extra],
        check=True, timeout=600,
    )
    result = next(tmp_path.glob("*.md")).read_text()
    assert result.startswith("# ") and "- command: `" in result and "- machine: " in result
    return result


@pytest.mark.parametrize("script", QUICK)
def test_benchmark_runs_quick(tmp_path, script):
    result = run_quick(tmp_path, script, QUICK[script])
    table = [line for line in result.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    assert len(table) >= 3, result  # a header and at least two measured rows


def test_kernel_versions_compares_a_commit_with_the_working_tree(tmp_path):
    import hf_heads.gaam.layer as gaam_layer

    if gaam_layer._fused_kernel() is None:
        pytest.skip("no C++ compiler with OpenMP here: there is no kernel to build")
    result = run_quick(tmp_path, "kernel_versions.py", ["HEAD", "worktree"])
    rows = [line for line in result.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 6, result  # 3 axes x 2 revisions
    assert all(line.endswith("| yes |") for line in rows), result  # the same kernel source or a faithful change


@pytest.mark.slow
def test_quality_runs_every_row_quick(tmp_path):
    rows = ["tfidf", "frozen_minilm", "curve", "scratch", "demo", "lora_minilm"]
    result = run_quick(tmp_path, "quality.py", ["--rows", *rows])
    for approach in ("TF-IDF", "from scratch", "demo pipeline", "linear probe", "daam", "LoRA", "Learning curve"):
        assert approach in result


def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    # CI never has a GPU: the check must say so, exit 0 and write no results file (a stale gpu.md would mislead).
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "no CUDA device" in result.stdout
    assert not list(tmp_path.iterdir())
