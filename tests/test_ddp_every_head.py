"""Distributed data parallel without unused-parameter detection (`ddp_find_unused_parameters=False`, what fast
multi-GPU runs use) trains every registered head, for every task it serves, on every backbone family, and every
GAAM-GPT2 task class in both placements.

One `accelerate launch` of tests/ddp_probe.py with the shipped two-process CPU config trains each case three steps
with `Trainer` (DDP raises at the step after one in which a trainable parameter got no gradient). For each case the
checks read what both processes report: no error, DDP over 2 gloo processes without unused-parameter detection, every
trainable parameter changed, and both processes end with bit-identical parameters. The same launch trains a head with a
deliberately unused parameter, registered as a user registers a head: it must fail with DDP's error, which shows that
the harness catches what it is for.

Heads, and the tasks each serves, come from the registry, so a new head is covered without a change here. Options are
swept where they change the model (`head_pooling` and `daam_variant` of a head, `classifier_pooling` of GAAM-GPT2's
sequence classifier). The default run trains a sample (every head, task and setting once, the backbones in turn); the
full grid is `-m slow`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedModel

import hf_heads
from hf_heads.models.gaam_gpt2.configuration_gaam_gpt2 import GAAM_PLACEMENTS
from hf_heads.models.headed.heads import HEADS


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import ddp_probe  # noqa: E402  (importing it registers nothing: the probe registers its dead head when launched)


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# What `DistributedDataParallel` raises when a parameter got no gradient and unused-parameter detection is off.
UNUSED_PARAMETER_ERROR = "Expected to have finished reduction in the prior iteration"


def launch(report: Path, grid: str) -> tuple[list[dict], list[dict]]:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/cpu_2proc.yaml",
        str(ROOT / "tests" / "ddp_probe.py"), str(report), "--grid", grid,
    ]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (json.loads(report.with_name(f"{report.name}.{rank}").read_text()) for rank in (0, 1))
    assert [case["case"] for case in first] == [case["case"] for case in second]
    return first, second


def problems(first: list[dict], second: list[dict]) -> list[str]:
    """Every way in which a case did not train as DDP without unused-parameter detection must, one line each."""
    found = []
    for ours, theirs in zip(first, second):
        name = ours["case"]
        for report in (ours, theirs):
            setup = (report["world_size"], report["backend"], report["wrapper"], report["find_unused_parameters"])
            if setup != (2, "gloo", "DistributedDataParallel", False):
                found.append(f"{name}: (world size, backend, wrapper, find_unused_parameters) = {setup}")
        if ours["kind"] == ddp_probe.DEAD_HEAD:
            for report in (ours, theirs):
                if UNUSED_PARAMETER_ERROR not in (report["error"] or ""):
                    found.append(f"{name}: a dead parameter trained without DDP's error (got {report['error']!r})")
        elif ours["error"] or theirs["error"]:
            error = (ours["error"] or theirs["error"])[:200]
            found.append(f"{name}: {error}... (parameters that did not change: {ours['unchanged']})")
        elif (ours["steps"], theirs["steps"]) != (ddp_probe.STEPS, ddp_probe.STEPS):
            found.append(f"{name}: {ours['steps']} and {theirs['steps']} steps instead of {ddp_probe.STEPS}")
        elif ours["trainable"] == 0 or ours["unchanged"] or theirs["unchanged"]:
            found.append(f"{name}: of {ours['trainable']} trainable parameters unchanged: {ours['unchanged']}")
        elif ours["checksum"] != theirs["checksum"]:
            found.append(f"{name}: the two processes end with different parameters")
    return found


def served_heads() -> set[tuple[str, str]]:
    """(model class, head type) for every registered head and each task it serves, the probe's dead head included."""
    heads = {**HEADS, ddp_probe.DEAD_HEAD: ddp_probe.DeadParameterHead}
    models = (hf_heads.HeadedModelForSequenceClassification, hf_heads.HeadedModelForTokenClassification)
    return {(model.__name__, name) for model in models for name, head in heads.items() if model.task in head.tasks}


def gaam_gpt2_task_classes() -> set[str]:
    """GAAM-GPT2's public task models, as the package exports them (the probe finds them in the modelling file)."""
    return {
        name for name in hf_heads.__all__
        if name.startswith("GaamGPT2") and name != "GaamGPT2Model"
        and isinstance(getattr(hf_heads, name), type) and issubclass(getattr(hf_heads, name), PreTrainedModel)
    }


def covered(reports: list[dict]) -> tuple[set, set]:
    """(model class, head type, backbone) of the headed cases; (model class, placement) of the GAAM-GPT2 ones."""
    headed = {(case["model_class"], case["kind"], case["backbone"]) for case in reports if case["backbone"]}
    gaam_gpt2 = {(case["model_class"], case["kind"]) for case in reports if not case["backbone"]}
    return headed, gaam_gpt2


def test_a_sample_of_every_head_and_backbone_trains_under_ddp_without_unused_parameter_detection(tmp_path):
    """Every head, task and setting once, the backbones in turn; every GAAM-GPT2 task class, the placements in turn."""
    first, second = launch(tmp_path / "report", "sample")
    found = problems(first, second)
    assert not found, "\n".join(found)
    headed, gaam_gpt2 = covered(first)
    assert {(model, head) for model, head, _ in headed} == served_heads()
    assert {backbone for _, _, backbone in headed} == set(ddp_probe.BACKBONES)
    assert {model for model, _ in gaam_gpt2} == gaam_gpt2_task_classes()
    assert {placement for _, placement in gaam_gpt2} == set(GAAM_PLACEMENTS)


@pytest.mark.slow
def test_every_head_on_every_backbone_trains_under_ddp_without_unused_parameter_detection(tmp_path):
    first, second = launch(tmp_path / "report", "full")
    found = problems(first, second)
    assert not found, "\n".join(found)
    headed, gaam_gpt2 = covered(first)
    assert headed == {(*head, backbone) for head in served_heads() for backbone in ddp_probe.BACKBONES}
    assert gaam_gpt2 == {(model, placement) for model in gaam_gpt2_task_classes() for placement in GAAM_PLACEMENTS}
