import os
import subprocess
import sys
import textwrap

import pytest
import torch


# Nothing in the suite may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


_BLOCK_HF_HEADS = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoHfHeads(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_heads" or name.startswith("hf_heads."):
                raise ImportError("hf_heads is deliberately not importable in this process")

    sys.meta_path.insert(0, _NoHfHeads())
    """
)


@pytest.fixture
def run_without_hf_heads(tmp_path):
    """Run Python code in a fresh process in which `import hf_heads` fails; returns its stdout."""

    def run(code: str) -> str:
        script = tmp_path / "script.py"
        script.write_text(_BLOCK_HF_HEADS + textwrap.dedent(code))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return result.stdout

    return run
