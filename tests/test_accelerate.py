"""Data parallelism and gradient accumulation report the loss a plain forward pass computes, and scale gradients alike.

The oracle is the mean loss of the untrained model over the whole data set, computed without `Trainer`
(tests/accelerate_probe.py). At a near-zero learning rate the model does not move, so one epoch's training loss must
equal it whatever the accumulation steps or the number of processes, and each step's gradient norm (before clipping)
must not depend on how the step's batch was split.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)

import hf_heads
from hf_heads.training.distributed import declare_loss_scaling, loss_uses_num_items


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import accelerate_probe  # noqa: E402


def same_run(report: dict, baseline: dict) -> None:
    assert report["train_loss"] == pytest.approx(baseline["oracle_loss"], rel=1e-6)
    assert report["step_losses"] == pytest.approx(baseline["step_losses"], rel=1e-5)
    assert report["grad_norms"] == pytest.approx(baseline["grad_norms"], rel=1e-5)


@pytest.mark.parametrize("model_kind", ["lm", "classifier", "gaam_classifier"])
def test_gradient_accumulation_reports_the_same_loss_and_gradients(model_kind, tmp_path):
    whole = accelerate_probe.run(model_kind, batch=8, accumulate=1, output_dir=str(tmp_path / "k1"))
    accumulated = accelerate_probe.run(model_kind, batch=2, accumulate=4, output_dir=str(tmp_path / "k4"))
    assert whole["train_loss"] == pytest.approx(whole["oracle_loss"], rel=1e-6)
    same_run(accumulated, whole)


def test_without_the_declaration_trainer_inflates_the_loss(tmp_path):
    """The failure the declaration fixes: a per-batch-mean loss taken as normalised by `num_items_in_batch`."""
    plain = accelerate_probe.run("classifier", batch=2, accumulate=4, output_dir=str(tmp_path / "p"),
                                 plain_trainer=True)
    assert plain["train_loss"] == pytest.approx(4 * plain["oracle_loss"], rel=1e-5)


def tiny_gpt2_config(config_class=GPT2Config):
    return config_class(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16, num_labels=3, pad_token_id=0,
                        bos_token_id=1, eos_token_id=1)


def headed_config(head_type):
    return hf_heads.HeadedConfig(backbone_config=tiny_gpt2_config(), head_type=head_type, num_labels=3)


MODELS = {
    "GPT2LMHeadModel": lambda: GPT2LMHeadModel(tiny_gpt2_config()),
    "GPT2ForSequenceClassification": lambda: GPT2ForSequenceClassification(tiny_gpt2_config()),
    "GPT2ForTokenClassification": lambda: GPT2ForTokenClassification(tiny_gpt2_config()),
    "GPT2ForQuestionAnswering": lambda: GPT2ForQuestionAnswering(tiny_gpt2_config()),
    "GaamGPT2LMHeadModel": lambda: hf_heads.GaamGPT2LMHeadModel(tiny_gpt2_config(hf_heads.GaamGPT2Config)),
    "GaamGPT2ForSequenceClassification": lambda: hf_heads.GaamGPT2ForSequenceClassification(
        tiny_gpt2_config(hf_heads.GaamGPT2Config)
    ),
    "GaamGPT2ForTokenClassification": lambda: hf_heads.GaamGPT2ForTokenClassification(
        tiny_gpt2_config(hf_heads.GaamGPT2Config)
    ),
    "GaamGPT2ForQuestionAnswering": lambda: hf_heads.GaamGPT2ForQuestionAnswering(
        tiny_gpt2_config(hf_heads.GaamGPT2Config)
    ),
    "HeadedModelForSequenceClassification": lambda: hf_heads.HeadedModelForSequenceClassification(
        headed_config("mean")
    ),
    "HeadedModelForTokenClassification": lambda: hf_heads.HeadedModelForTokenClassification(
        headed_config("last_token")
    ),
}


def loss_with(model, num_items_in_batch) -> float:
    torch.manual_seed(0)
    ids = torch.randint(2, 40, (4, 10))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    name = type(model).__name__
    if name.endswith("LMHeadModel"):
        inputs["labels"] = ids
    elif name.endswith("SequenceClassification"):
        inputs["labels"] = torch.tensor([0, 1, 2, 1])
    elif name.endswith("TokenClassification"):
        inputs["labels"] = torch.randint(0, 3, (4, 10))
    else:
        inputs["start_positions"], inputs["end_positions"] = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    if num_items_in_batch is not None:
        inputs["num_items_in_batch"] = torch.tensor(num_items_in_batch)
    with torch.no_grad():
        return model.eval()(**inputs).loss.item()


@pytest.mark.parametrize("name", list(MODELS))
def test_each_declaration_matches_what_the_model_does_with_num_items_in_batch(name):
    """Declared True: doubling `num_items_in_batch` halves the loss. Declared False: the loss ignores it."""
    model = MODELS[name]()
    declared = loss_uses_num_items(model)
    assert declared is not None, f"{name} does not say how its loss treats num_items_in_batch"
    assert loss_with(model, 100) == pytest.approx((0.5 if declared else 1.0) * loss_with(model, 50), rel=1e-5)
    declare_loss_scaling(model)
    assert model.accepts_loss_kwargs is declared


# --- several processes: `accelerate launch` as a user types it -------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def launch(config: str, report: Path, *probe_args) -> list[dict]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"recipes/accelerate/{config}",
               str(ROOT / "tests" / "accelerate_probe.py"), str(report), *probe_args]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(path.read_text()) for path in sorted(report.parent.glob(report.name + ".[0-9]"))]


@pytest.mark.slow
@pytest.mark.parametrize("model_kind", ["lm", "classifier"])
def test_two_cpu_processes_train_together_and_report_what_one_process_does(model_kind, tmp_path):
    one = accelerate_probe.run(model_kind, batch=8, accumulate=1, output_dir=str(tmp_path / "one"))
    reports = launch("cpu_2proc.yaml", tmp_path / "two", "--model", model_kind, "--batch", "4")
    assert [(r["world_size"], r["process_index"]) for r in reports] == [(2, 0), (2, 1)]
    assert {(r["distributed_type"], r["backend"]) for r in reports} == {("DistributedType.MULTI_CPU", "gloo")}
    for report in reports:
        same_run(report, one)
    accumulated = launch("cpu_2proc.yaml", tmp_path / "two_k2", "--model", model_kind, "--batch", "2",
                         "--accumulate", "2")
    for report in accumulated:
        same_run(report, one)


@pytest.mark.slow
def test_two_cpu_processes_train_to_the_weights_one_process_reaches(tmp_path):
    """At a real learning rate (no dropout, same sample order): the same steps, the same weights, to float noise."""
    one = accelerate_probe.run("gaam_classifier", batch=8, accumulate=1, output_dir=str(tmp_path / "one"),
                               learning_rate=1e-2)
    [two, _] = launch("cpu_2proc.yaml", tmp_path / "two", "--model", "gaam_classifier", "--batch", "4",
                      "--learning_rate", "1e-2")
    assert two["step_losses"] == pytest.approx(one["step_losses"], rel=1e-5)
    largest = max(abs(a - b) for name in one["final_weights"]
                  for a, b in zip(one["final_weights"][name], two["final_weights"][name]))
    assert largest < 1e-6


# --- the shipped launch configs --------------------------------------------------------------------------------------

def load_config(name: str) -> dict:
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "recipes" / "accelerate" / name
    load_config_from_file(str(path))  # accelerate's own parser accepts it
    return yaml.safe_load(path.read_text())


def test_every_shipped_accelerate_config_parses_and_says_what_its_name_says():
    names = sorted(path.name for path in (ROOT / "recipes" / "accelerate").glob("*.yaml"))
    assert names == ["cpu.yaml", "cpu_2proc.yaml", "deepspeed_zero2.yaml", "fsdp.yaml", "gpu_bf16.yaml",
                     "multi_gpu_ddp.yaml"]
    configs = {name: load_config(name) for name in names}
    assert configs["cpu.yaml"]["distributed_type"] == "NO" and configs["cpu.yaml"]["use_cpu"] is True
    assert configs["cpu_2proc.yaml"]["distributed_type"] == "MULTI_GPU"
    assert configs["cpu_2proc.yaml"]["num_processes"] == 2
    assert configs["gpu_bf16.yaml"]["mixed_precision"] == "bf16" and configs["gpu_bf16.yaml"]["num_processes"] == 1
    assert configs["multi_gpu_ddp.yaml"]["distributed_type"] == "MULTI_GPU"
    assert configs["deepspeed_zero2.yaml"]["deepspeed_config"]["zero_stage"] == 2
    fsdp = configs["fsdp.yaml"]["fsdp_config"]
    # The wrapping unit names classes that exist, or FSDP would wrap nothing.
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    from hf_heads.models.gaam_gpt2.modeling_gaam_gpt2 import GaamGPT2Block

    assert fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",") == [GPT2Block.__name__, GaamGPT2Block.__name__]
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # `Trainer.save_model` gathers a loadable model


@pytest.mark.parametrize("world_size, selected", [("2", True), ("1", False), (None, False)])
def test_a_multi_process_launch_without_an_accelerator_selects_the_cpu(monkeypatch, world_size, selected):
    from hf_heads.training.distributed import join_cpu_processes

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert join_cpu_processes() is selected
    assert os.environ.get("ACCELERATE_USE_CPU") == ("true" if selected else None)


def test_a_lora_wrapped_model_carries_its_declaration_to_trainer(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    model = get_peft_model(GPT2ForSequenceClassification(tiny_gpt2_config()),
                           LoraConfig(r=2, target_modules=["c_attn"], task_type="SEQ_CLS"))
    declare_loss_scaling(model)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert Trainer(model=model, args=args).model_accepts_loss_kwargs is False
