"""Benchmark scripts run in `--quick` mode so they cannot rot. No timing is asserted."""

import subprocess
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["gaam_op.py"])
def test_benchmark_runs_quick(tmp_path, script):
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--results-dir", str(tmp_path)], check=True, timeout=300
    )
    result = next(tmp_path.glob("*.md")).read_text()
    assert result.startswith("# ") and "- command: `" in result and "| ours" in result.replace(" ms", "")
