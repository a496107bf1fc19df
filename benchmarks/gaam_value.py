"""What GAAM does to GPT-2, measured: GAAM-GPT2 against GPT-2 at equal steps, paired over seeds, on BBC News.

(a) topic classification trained from scratch: accuracy and loss on a validation split carved (stratified, 15%)
    from the training split (the test split is never read: these figures choose defaults);
(b) a character-level language model on BBC text (a-z and space), bits per character on held-out articles;
(c) the seed notebook's grid on BBC: GAAM replaces attention in every block, sequence axis, (Gaussians, heads) in
    {(5, 4), (10, 8), (20, 16)}.

Pairing: for each seed, GPT-2 and every GAAM variant start from the same GPT-2 weights (the GAAM variant loads them,
as it would a checkpoint), see the same batches in the same order and train for the same steps; the comparison is
the per-seed difference, with a 95% t-interval over seeds. Every GAAM run also reports `gaam_contribution`: each GAAM
layer's branch against the residual stream, and the loss change when GAAM is removed.

    python benchmarks/gaam_value.py [--seeds 5] [--quick] [--tasks classification lm grid]
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hf_heads import (  # noqa: E402
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaamGPT2LMHeadModel,
    gaam_contribution,
)
from hf_heads.tokenization import train_bpe_tokenizer  # noqa: E402
from hf_heads.tokenization.tokenization_char import TEXT8_ALPHABET  # noqa: E402
from hf_heads.training.data import load_bbc_news, split_stratified  # noqa: E402
from hf_heads.training.lm_data import normalize_to_alphabet  # noqa: E402


SIZE = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128)
GAAM = dict(gaam_num_heads=4, gaam_num_gaussians=5)
BATCH_SIZE = 16
# 97.5% quantiles of Student's t for the paired interval, by degrees of freedom.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}

# "before": the settings GAAM-GPT2 had before normalisation and gate were chosen (reference "sum", gate closed at 0).
BEFORE = dict(gaam_normalization="sum", gaam_gate_init=0.0)
CLASSIFICATION = {
    "GPT-2": dict(gaam_layers=[]),
    "augment, features, before (sum, gate 0)": dict(gaam_placement="augment", gaam_norm_axis="features", **BEFORE),
    "augment, features (default: mean, gate 1)": dict(gaam_placement="augment", gaam_norm_axis="features"),
    "augment, features, none": dict(gaam_placement="augment", gaam_norm_axis="features", gaam_normalization="none"),
    "augment, sequence, mean": dict(gaam_placement="augment", gaam_norm_axis="sequence"),
    "replace block 1, features, mean": dict(gaam_placement="replace", gaam_layers=[1], gaam_norm_axis="features"),
}
LANGUAGE_MODEL = {
    "GPT-2": dict(gaam_layers=[]),
    "augment, before (sum, gate 0)": dict(gaam_placement="augment", **BEFORE),
    "augment (default: mean, gate 1)": dict(gaam_placement="augment"),
    "augment, none": dict(gaam_placement="augment", gaam_normalization="none"),
    "replace block 1, mean": dict(gaam_placement="replace", gaam_layers=[1]),
}
GATE_INITS = [0.0, 0.3, 0.5, 1.0]
GRID_SETTINGS = [(5, 4), (10, 8), (20, 16)]
GRID_NORMALIZATIONS = ["sum", "mean"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--tasks", nargs="+", default=["classification", "lm", "grid"],
        choices=["classification", "lm", "grid", "gate"],
        help="gate: how the gate's initial value trades closeness to GPT-2 at step 0 against GAAM's share after "
        "training (the language model of (b)); written to results/gaam_gate.md",
    )
    parser.add_argument("--classification_steps", type=int, default=100)
    parser.add_argument("--lm_steps", type=int, default=150)
    parser.add_argument("--grid_seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 seeds, a few steps: a smoke test of the script")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args()
    if not 2 <= args.seeds <= 10:
        parser.error(f"--seeds must be in [2, 10] (a paired interval needs 2), got {args.seeds}")
    if args.quick:
        args.seeds, args.grid_seeds, args.classification_steps, args.lm_steps = 2, 2, 4, 4
    return args


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval."""
    mean = statistics.fmean(differences)
    half = T_975[len(differences) - 1] * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def schedule(optimizer, steps: int, warmup: int = 20):
    warmup = min(warmup, max(steps // 5, 1))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model, batches, steps: int, lr: float):
    """AdamW with warmup and cosine decay, gradient clipping at 1: the demo's fine-tuning settings."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = schedule(optimizer, steps)
    model.train()
    for _, batch in zip(range(steps), batches):
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model.eval()


def paired_models(model_class, base_config: dict, variants: dict, seed: int):
    """Each variant's model, all starting from the same GPT-2 weights for this seed (GAAM's own are new)."""
    torch.manual_seed(seed)
    gpt2 = model_class(GaamGPT2Config(**base_config, gaam_layers=[]))
    gpt2_weights = gpt2.state_dict()
    for name, overrides in variants.items():
        torch.manual_seed(seed)
        model = model_class(GaamGPT2Config(**{**base_config, **GAAM, **overrides}))
        own = model.state_dict()
        # A "replace" block has no self-attention: GPT-2's attention weights for it are dropped, as on loading.
        missing, _ = model.load_state_dict({k: v for k, v in gpt2_weights.items() if k in own}, strict=False)
        assert all(".gaam" in key for key in missing), missing
        yield name, model


# ----------------------------------------------------------------------------------------------- classification


class ClassificationData:
    def __init__(self, max_length: int = 128, vocab_size: int = 2000):
        corpus = load_bbc_news(seed=0)
        splits = split_stratified(corpus["train"], test_size=0.15, seed=0)
        self.tokenizer = train_bpe_tokenizer(splits["train"]["text"], vocab_size=vocab_size)
        self.num_labels = corpus["train"].features["label"].num_classes

        def encode(split):
            ids = self.tokenizer(list(split["text"]), truncation=True, max_length=max_length)["input_ids"]
            return [torch.tensor(row) for row in ids], torch.tensor(list(split["label"]))

        self.train, self.validation = encode(splits["train"]), encode(splits["test"])

    def collate(self, rows, labels):
        input_ids = pad_sequence(rows, batch_first=True, padding_value=self.tokenizer.pad_token_id)
        lengths = torch.tensor([len(row) for row in rows])
        attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
        return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def train_batches(self, seed: int, batch_size: int = BATCH_SIZE):
        generator = torch.Generator().manual_seed(seed)
        rows, labels = self.train
        while True:
            order = torch.randperm(len(rows), generator=generator)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                yield self.collate([rows[i] for i in index], labels[index])

    def validation_batches(self, batch_size: int = 64):
        rows, labels = self.validation
        return [
            self.collate(rows[start : start + batch_size], labels[start : start + batch_size])
            for start in range(0, len(rows), batch_size)
        ]

    def config(self) -> dict:
        return dict(
            SIZE, vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id,
            num_labels=self.num_labels, classifier_pooling="mean",
        )


@torch.no_grad()
def accuracy(model, batches) -> float:
    correct = sum((model(**batch).logits.argmax(-1) == batch["labels"]).sum().item() for batch in batches)
    return correct / sum(len(batch["labels"]) for batch in batches)


def run_classification(data: ClassificationData, variants: dict, seeds, steps: int, lr: float = 1e-3) -> dict:
    validation = data.validation_batches()
    results = {name: [] for name in variants}
    for seed in seeds:
        for name, model in paired_models(GaamGPT2ForSequenceClassification, data.config(), variants, seed):
            started = time.perf_counter()
            train(model, data.train_batches(seed), steps, lr)
            row = dict(accuracy=accuracy(model, validation), seconds=time.perf_counter() - started)
            row.update(_contribution_or_loss(model, validation))
            results[name].append(row)
            print(f"[classification] seed {seed} {name}: {_brief(row)}", flush=True)
    return results


# ------------------------------------------------------------------------------------------ character-level LM


class CharacterData:
    """BBC articles as text8-style characters (a-z and space): training text and held-out articles."""

    def __init__(self, block_size: int = 128, held_out_blocks: int = 256):
        corpus = load_bbc_news(seed=0)
        splits = split_stratified(corpus["train"], test_size=0.15, seed=0)
        self.alphabet = TEXT8_ALPHABET
        self.block_size = block_size
        self.train = self.encode(splits["train"]["text"])
        held_out = self.encode(splits["test"]["text"])
        blocks = min(len(held_out) // block_size, held_out_blocks)
        self.validation = held_out[: blocks * block_size].view(blocks, block_size)

    def encode(self, texts) -> torch.Tensor:
        text = " ".join(normalize_to_alphabet(text.lower(), self.alphabet) for text in texts)
        index = {character: i for i, character in enumerate(self.alphabet)}
        return torch.tensor([index[character] for character in text])

    def train_batches(self, seed: int, batch_size: int = BATCH_SIZE):
        generator = torch.Generator().manual_seed(seed)
        while True:
            starts = torch.randint(len(self.train) - self.block_size, (batch_size,), generator=generator)
            ids = torch.stack([self.train[start : start + self.block_size] for start in starts])
            yield dict(input_ids=ids, labels=ids)

    def validation_batches(self, batch_size: int = 64):
        blocks = self.validation
        return [
            dict(input_ids=blocks[start : start + batch_size], labels=blocks[start : start + batch_size])
            for start in range(0, len(blocks), batch_size)
        ]

    def config(self) -> dict:
        return dict(SIZE, vocab_size=len(self.alphabet), bos_token_id=None, eos_token_id=None, pad_token_id=None)


def run_language_model(data: CharacterData, variants: dict, seeds, steps: int, lr: float = 2e-3) -> dict:
    validation = data.validation_batches()
    results = {name: [] for name in variants}
    for seed in seeds:
        for name, model in paired_models(GaamGPT2LMHeadModel, data.config(), variants, seed):
            started = time.perf_counter()
            train(model, data.train_batches(seed), steps, lr)
            row = dict(seconds=time.perf_counter() - started)
            row.update(_contribution_or_loss(model, validation))
            row["bits_per_char"] = row["loss"] / math.log(2)
            results[name].append(row)
            print(f"[lm] seed {seed} {name}: {_brief(row)}", flush=True)
    return results


def step0_divergence(data: CharacterData, seed: int, steps: int, gate_inits) -> dict:
    """KL(GPT-2 || GAAM-GPT2 with each gate value) per character, at the step where GAAM-GPT2 loads a trained GPT-2."""
    (_, gpt2), = paired_models(GaamGPT2LMHeadModel, data.config(), {"GPT-2": dict(gaam_layers=[])}, seed)
    train(gpt2, data.train_batches(seed), steps, 2e-3)
    batches = data.validation_batches()
    with torch.no_grad():
        reference = [torch.log_softmax(gpt2(**batch).logits, -1) for batch in batches]
    divergence = {}
    for gate_init in gate_inits:
        torch.manual_seed(seed)
        model = GaamGPT2LMHeadModel(GaamGPT2Config(**data.config(), **GAAM, gaam_gate_init=gate_init)).eval()
        model.load_state_dict(gpt2.state_dict(), strict=False)
        with torch.no_grad():
            kl = [
                (p.exp() * (p - torch.log_softmax(model(**batch).logits, -1))).sum(-1).mean().item()
                for p, batch in zip(reference, batches)
            ]
        divergence[gate_init] = statistics.fmean(kl)
    return divergence


def gate_table(results: dict, divergence: dict) -> str:
    lines = [
        "| gate_init | KL to the loaded GPT-2 at step 0 (nats/char) | bits/char after training "
        "| GAAM branch / residual | loss change, GAAM removed (min over seeds) | seed-to-seed spread of loss "
        "| removal > spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for gate_init in GATE_INITS:
        rows = results[gate_init]
        losses = [row["loss"] for row in rows]
        spread = max(losses) - min(losses)
        removed = min(row["loss_without_gaam"] - row["loss"] for row in rows)
        layers = zip(*(row["branch_ratios"] for row in rows))
        ratios = " / ".join(f"{statistics.fmean(layer):.1%}" for layer in layers)
        bits = statistics.fmean(row["bits_per_char"] for row in rows)
        lines.append(
            f"| {gate_init} | {divergence[gate_init]:.4f} | {bits:.4f} | {ratios} | {removed:+.4f} | {spread:.4f} "
            f"| {'yes' if removed > spread else 'no'} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ shared reports


@torch.no_grad()
def _contribution_or_loss(model, batches) -> dict:
    if not model.config.gaam_block_indices:
        loss = sum(model(**batch).loss.item() * len(batch["labels"]) for batch in batches)
        return dict(loss=loss / sum(len(batch["labels"]) for batch in batches))
    measured = gaam_contribution(model, batches)
    gates = [block.gaam_gate.weight.item() for block in model.transformer.h if hasattr(block, "gaam_gate")]
    return dict(
        loss=measured.eval_loss, loss_without_gaam=measured.eval_loss_without_gaam,
        branch_ratios=measured.branch_ratios, gates=gates,
    )


def _brief(row: dict) -> str:
    parts = [f"{key} {value:.4f}" for key, value in row.items() if isinstance(value, float) and key != "seconds"]
    if "branch_ratios" in row:
        parts.append("branch/residual " + "/".join(f"{ratio:.1%}" for ratio in row["branch_ratios"]))
    if row.get("gates"):
        parts.append("gates " + "/".join(f"{gate:+.3f}" for gate in row["gates"]))
    return ", ".join(parts) + f" ({row['seconds']:.0f} s)"


def _fmt_interval(differences, scale=1.0, digits=3) -> str:
    mean, low, high = (value * scale for value in paired_interval(differences))
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def comparison_table(results: dict, metrics: list[tuple[str, str, float, int]]) -> str:
    """One row per variant: mean metric, paired difference to GPT-2 with its 95% interval, GAAM's contribution."""
    header = ["variant"]
    for label, _, _, _ in metrics:
        header += [f"{label} (mean)", f"{label}: minus GPT-2 [95% CI]"]
    header += ["GAAM branch / residual (per layer)", "loss change, GAAM removed [95% CI]", "gates (mean)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    baseline = results["GPT-2"]
    for name, rows in results.items():
        cells = [name]
        for _, key, scale, digits in metrics:
            cells.append(f"{statistics.fmean(row[key] for row in rows) * scale:.{digits}f}")
            if name == "GPT-2":
                cells.append("")
            else:
                cells.append(_fmt_interval([r[key] - b[key] for r, b in zip(rows, baseline)], scale, digits))
        if "branch_ratios" in rows[0]:
            layers = zip(*(row["branch_ratios"] for row in rows))
            cells.append(" / ".join(f"{statistics.fmean(layer):.1%}" for layer in layers))
            cells.append(_fmt_interval([row["loss_without_gaam"] - row["loss"] for row in rows], digits=4))
            gates = [statistics.fmean(row["gates"]) for row in rows if row["gates"]]
            cells.append(f"{statistics.fmean(gates):+.3f}" if gates else "(none)")
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_table(results: dict) -> str:
    header = (
        "| normalization | (Gaussians, heads) | accuracy (mean ± sd) | loss (mean ± sd) | GAAM branch / residual "
        "| loss change, GAAM removed |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for (normalization, setting), rows in results.items():
        accuracies = [row["accuracy"] for row in rows]
        losses = [row["loss"] for row in rows]
        ratios = " / ".join(f"{statistics.fmean(layer):.1%}" for layer in zip(*(row["branch_ratios"] for row in rows)))
        removed = statistics.fmean(row["loss_without_gaam"] - row["loss"] for row in rows)
        lines.append(
            f"| {normalization} | {setting} "
            f"| {statistics.fmean(accuracies):.1%} ± {statistics.stdev(accuracies):.1%} | "
            f"{statistics.fmean(losses):.4f} ± {statistics.stdev(losses):.4f} | {ratios} | {removed:+.4f} |"
        )
    return "\n".join(lines)


def grid_differences(results: dict) -> str:
    """Per normalization: do the three settings train differently (paired loss differences between settings)?"""
    lines = []
    for normalization in GRID_NORMALIZATIONS:
        runs = {setting: rows for (norm, setting), rows in results.items() if norm == normalization}
        if len(runs) < 2:
            continue
        settings = list(runs)
        pairs = []
        for i, first in enumerate(settings):
            for second in settings[i + 1 :]:
                differences = [a["loss"] - b["loss"] for a, b in zip(runs[first], runs[second])]
                identical = all(difference == 0 for difference in differences)
                note = " (identical!)" if identical else ""
                pairs.append(f"{first} − {second}: {_fmt_interval(differences, digits=4)}{note}")
        lines.append(f"- `{normalization}`: loss " + "; ".join(pairs))
    return "\n".join(lines)


def main():
    args = parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    sections = []

    def report():
        # Written after every section, so a long run leaves its finished sections behind.
        body = "\n\n".join(sections) + f"\n\nTotal {time.perf_counter() - started:.0f} s.\n"
        write_result("gaam_gate" if args.tasks == ["gate"] else "gaam_value", body, args.results_dir)
        return body

    if "gate" in args.tasks:
        character_data = CharacterData()
        variants = {gate_init: dict(gaam_placement="augment", gaam_gate_init=gate_init) for gate_init in GATE_INITS}
        results = run_language_model(character_data, variants, seeds, args.lm_steps)
        divergences = [step0_divergence(character_data, seed, args.lm_steps, GATE_INITS) for seed in seeds]
        divergence = {gate_init: statistics.fmean(d[gate_init] for d in divergences) for gate_init in GATE_INITS}
        sections.append(
            "## The gate's initial value (\"augment\", normalisation \"mean\")\n\n"
            f"The language model of (b): {SIZE}, {args.lm_steps} steps, {args.seeds} seeds. Closeness at step 0: "
            "a GPT-2 "
            "LM trained with the same settings is loaded into GAAM-GPT2 with each gate value (GAAM's own parameters "
            "new), KL from GPT-2's next-character distribution on the held-out blocks. After training: GAAM-GPT2 "
            "trained from the start with that gate value.\n\n" + gate_table(results, divergence)
        )
        report()
    if args.quick:
        global CLASSIFICATION, LANGUAGE_MODEL, GRID_SETTINGS
        CLASSIFICATION = dict(list(CLASSIFICATION.items())[:3])
        LANGUAGE_MODEL = dict(list(LANGUAGE_MODEL.items())[:3])
        GRID_SETTINGS = GRID_SETTINGS[:2]
    if "classification" in args.tasks or "grid" in args.tasks:
        classification_data = ClassificationData()
    if "classification" in args.tasks:
        results = run_classification(classification_data, CLASSIFICATION, seeds, args.classification_steps)
        sections.append(
            f"## (a) BBC News topic classification from scratch\n\n"
            f"{SIZE}, GAAM {GAAM}, mean pooling, 128 tokens, {args.classification_steps} steps of {BATCH_SIZE} "
            "articles, "
            f"AdamW lr 1e-3 (warmup, cosine), validation split of {len(classification_data.validation[0])} articles "
            f"(chance 20%). {args.seeds} seeds; differences are GAAM-GPT2 minus GPT-2, paired by seed.\n\n"
            + comparison_table(results, [("accuracy %", "accuracy", 100, 1), ("loss", "loss", 1, 4)])
        )
        report()
    if "lm" in args.tasks:
        character_data = CharacterData()
        results = run_language_model(character_data, LANGUAGE_MODEL, seeds, args.lm_steps)
        sections.append(
            f"## (b) Character-level language model on BBC text\n\n"
            f"{SIZE}, GAAM {GAAM}, alphabet a-z + space, blocks of 128 characters, {args.lm_steps} steps of "
            f"{BATCH_SIZE} "
            f"blocks, AdamW lr 2e-3 (warmup, cosine); bits per character on {len(character_data.validation)} held-out "
            f"blocks. Lower is better.\n\n"
            + comparison_table(results, [("bits/char", "bits_per_char", 1, 4)])
        )
        report()
    if "grid" in args.tasks:
        variants = {
            (normalization, setting): dict(
                gaam_placement="replace", gaam_norm_axis="sequence", gaam_normalization=normalization,
                gaam_num_gaussians=setting[0], gaam_num_heads=setting[1],
            )
            for normalization in GRID_NORMALIZATIONS
            for setting in GRID_SETTINGS
        }
        results = {key: [] for key in variants}
        validation = classification_data.validation_batches()
        for seed in range(args.grid_seeds):
            for key, overrides in variants.items():
                ((_, model),) = paired_models(
                    GaamGPT2ForSequenceClassification, classification_data.config(), {key: overrides}, seed
                )
                run_started = time.perf_counter()
                train(model, classification_data.train_batches(seed), args.classification_steps, 1e-3)
                row = dict(accuracy=accuracy(model, validation), seconds=time.perf_counter() - run_started)
                row.update(_contribution_or_loss(model, validation))
                results[key].append(row)
                print(f"[grid] seed {seed} {key}: {_brief(row)}", flush=True)
        sections.append(
            "## (c) The seed notebook's grid on BBC News\n\n"
            "GAAM replaces attention in every block, sequence axis, mean pooling; trained from scratch as in (a) "
            f"(the notebook froze a pretrained GPT-2, which is not available offline). {args.grid_seeds} seeds.\n\n"
            + grid_table(results) + "\n\nPaired differences of validation loss between settings [95% CI]:\n\n"
            + grid_differences(results)
        )
    print(report())


if __name__ == "__main__":
    main()
