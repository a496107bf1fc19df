"""A classifier run killed with SIGKILL mid-training and resumed ends where the uninterrupted run ends."""

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file


ROOT = Path(__file__).resolve().parents[1]
RUN = [
    sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--model_type", "gaam_gpt2",
    "--config_overrides", "n_layer=2,n_embd=32,n_head=4,gaam_num_heads=2,classifier_pooling=mean",
    "--tokenizer_vocab_size", "300", "--max_length", "32", "--dataset_name", "bbc_news", "--max_train_samples", "96",
    "--max_eval_samples", "32", "--num_train_epochs", "3", "--per_device_train_batch_size", "4",
    "--learning_rate", "3e-3", "--save_strategy", "steps", "--save_steps", "8", "--report_to", "none",
    "--use_cpu", "true", "--seed", "0", "--disable_tqdm", "true",
]  # 72 steps; dropout is on, so the resumed run must also restore the random-number generators


def fingerprint(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run([*RUN, "--output_dir", str(output_dir)], check=True, capture_output=True, timeout=600)
    return output_dir


def test_killed_and_resumed_run_ends_with_the_same_weights_and_metrics(uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    process = subprocess.Popen([*RUN, "--output_dir", str(output_dir)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (output_dir / "checkpoint-16" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (output_dir / "model.safetensors").exists(), "the run finished before the kill"
    saved_before = {path.name: fingerprint(path) for path in output_dir.glob("checkpoint-*")
                    if (path / "trainer_state.json").exists()}

    subprocess.run([*RUN, "--output_dir", str(output_dir), "--resume_from_checkpoint", "true"], check=True,
                   capture_output=True, timeout=600)

    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    largest = max((expected[name] - resumed[name]).abs().max().item() for name in expected)
    print(f"max |Δweight| between the resumed and the uninterrupted run: {largest:.3g}")
    assert largest <= 1e-6
    metrics = [json.loads((folder / "all_results.json").read_text()) for folder in (uninterrupted, output_dir)]
    assert metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"]
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], abs=1e-6)
    # What the killed run wrote is still there, byte for byte.
    for name, files in saved_before.items():
        assert fingerprint(output_dir / name) == files, name


def test_resume_without_a_complete_checkpoint_is_refused(tmp_path):
    (tmp_path / "run" / "checkpoint-8").mkdir(parents=True)  # a folder a kill interrupted: no trainer_state.json
    result = subprocess.run([*RUN, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "true"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "holds no complete checkpoint" in result.stderr
