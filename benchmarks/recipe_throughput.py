"""Training samples per second of `train_classifier.py`'s data path against the notebook setup it replaces (CPU).

The notebook padded every text to 1024 tokens and trained with batch size 1. The recipe truncates to `--max_length`
(128 by default), pads each batch to its longest text (`DataCollatorWithPadding`) and trains with batch size 32.
Same model (GAAM-GPT2, 2 layers, d=128, "augment" in every block, 1024 positions), same BBC News training texts,
both through `Trainer`. A third row keeps the notebook's 1024-token truncation but uses the recipe's dynamic padding,
batch 32 and `--train_sampling_strategy group_by_length`, to separate what batching and padding buy from what the
shorter truncation buys. Times are medians of repeated short trainings taken in turns within one run.
"""

import argparse
import statistics
import sys
import time
import tempfile
from pathlib import Path

import torch
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hf_heads import GaamGPT2Config, GaamGPT2ForSequenceClassification  # noqa: E402
from hf_heads.tokenization import train_bpe_tokenizer  # noqa: E402
from hf_heads.training.data import load_bbc_news  # noqa: E402


class TrainingLoopSeconds(TrainerCallback):
    """Seconds from the first to the last step of each `train()` call: the loop, not `Trainer`'s one-off setup."""

    def __init__(self):
        self.runs = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.runs.append(time.perf_counter() - self.started)


def settings(long: int, short: int) -> dict:
    """The notebook's data path and the recipe's; `long` is the notebook's padded length, `short` the recipe's."""
    return {
        f"notebook: pad every text to {long}, batch 1": dict(max_length=long, pad_to_max=True, batch=1),
        f"train_classifier.py defaults: max_length {short}, dynamic padding, batch 32": dict(
            max_length=short, pad_to_max=False, batch=32
        ),
        f"train_classifier.py at {long} tokens: dynamic padding, group_by_length, batch 32": dict(
            max_length=long, pad_to_max=False, batch=32, group_by_length=True
        ),
    }


def make_trainer(setting: dict, texts, labels, tokenizer, workdir: str, samples: int, positions: int, clock) -> Trainer:
    encode = dict(truncation=True, max_length=setting["max_length"])
    if setting["pad_to_max"]:
        encode["padding"] = "max_length"
    encoded = tokenizer(texts, **encode)
    rows = [{**{key: values[i] for key, values in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]
    set_seed(0)
    config = GaamGPT2Config(
        n_layer=2, n_embd=128, n_head=4, n_positions=positions, vocab_size=len(tokenizer), num_labels=5,
        pad_token_id=tokenizer.pad_token_id, classifier_pooling="mean", gaam_num_heads=4, gaam_num_gaussians=5,
    )
    arguments = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=setting["batch"], max_steps=max(1, samples // setting["batch"]),
        learning_rate=1e-3, save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        train_sampling_strategy="group_by_length" if setting.get("group_by_length") else "random",
    )
    collator = default_data_collator if setting["pad_to_max"] else DataCollatorWithPadding(tokenizer)
    return Trainer(
        model=GaamGPT2ForSequenceClassification(config), args=arguments, train_dataset=rows, data_collator=collator,
        callbacks=[clock],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few samples, one repeat (to keep the script working)")
    parser.add_argument("--samples", type=int, default=64, help="training samples per timed run and setting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    samples, repeats = (32, 1) if options.quick else (options.samples, options.repeats)
    if samples % 32:
        parser.error(f"--samples must be a multiple of the recipe's batch size 32, got {samples}")
    long, short = (128, 32) if options.quick else (1024, 128)
    rows = settings(long, short)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    train = load_bbc_news(seed=0)["train"]
    tokenizer = train_bpe_tokenizer(train["text"], vocab_size=4000)
    # The notebook runs take as many distinct texts as the recipe's (the first `samples` of a fixed shuffle).
    train = train.shuffle(seed=0).select(range(samples))
    clocks = {name: TrainingLoopSeconds() for name in rows}
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {
            name: make_trainer(
                setting, list(train["text"]), list(train["label"]), tokenizer, workdir, samples, long, clocks[name]
            )
            for name, setting in rows.items()
        }
        for _ in range(1 + repeats):  # in turns, so machine drift hits every row alike; the first turn warms up
            for trainer in trainers.values():
                trainer.train()
    seconds = {
        name: statistics.median(clock.runs[1:]) for name, clock in clocks.items()
    }
    baseline = next(iter(rows))
    lines = [
        f"GAAM-GPT2 classifier (2×128, augment, {long} positions), {samples} BBC News training texts per timed run, "
        f"`Trainer` on CPU; time of the training loop (not `Trainer`'s setup), median of {repeats} runs taken in turns after one warm-up.\n",
        "| data path | samples/s | speed-up vs notebook |",
        "|---|---|---|",
    ]
    base_rate = trainers[baseline].args.max_steps * rows[baseline]["batch"] / seconds[baseline]
    for name in rows:
        rate = trainers[name].args.max_steps * rows[name]["batch"] / seconds[name]
        lines.append(f"| {name} | {rate:.1f} | {rate / base_rate:.1f}× |")
        print(lines[-1], flush=True)
    path = write_result("recipe_throughput", "\n".join(lines) + "\n", options.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
