"""The README's main command, in its smoke-test form: every stage runs end to end offline."""

import json
import subprocess
import sys
from pathlib import Path


DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.py"


def test_demo_quick_runs_and_writes_its_table(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(DEMO), "--quick", "--output_dir", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((output / "demo_results.json").read_text())
    assert [row["model"] for row in rows] == [
        "GAAM-GPT2 (augment, every block)",
        "GAAM-GPT2 (augment, every block), GAAM removed",
        "headed attention classifier on the GAAM-GPT2 LM",
        "GPT-2 (no GAAM)",
    ]
    assert "| model | test accuracy |" in result.stdout
    for folder in ("gaam-gpt2/classifier", "gaam-gpt2/headed", "gpt2/classifier"):
        assert (output / folder / "model.safetensors").exists()


def test_demo_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "keep.txt").write_text("a user's file")
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "already holds files" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "a user's file"
