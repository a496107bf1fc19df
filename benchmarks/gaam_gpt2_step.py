"""Training-step cost of GAAM-GPT2 "augment" against `transformers`' GPT-2 with the same weights (CPU).

A training step (forward with labels, backward, AdamW update) of GPT-2 and of GAAM-GPT2 with GAAM "augment" in every
block (H=4, G=5, gate open), for the causal LM (features axis) and the sequence classifier (features and sequence
axes; per-batch padding, so the padding-aware path runs), at a 4×256 shape and at GPT-2-small shapes. The two models
are stepped in turns; the figure is the median of the per-turn ratios GAAM-GPT2 / GPT-2 with a distribution-free 95%
interval, so drift of a shared machine hits both alike. A turn times a few consecutive steps of each model (steps
run back to back in training, too), and glibc keeps freed memory in the process (`keep_freed_memory`), so that
page faults of the large logits do not swamp the comparison. "replace" (GAAM instead of attention) is a different,
attention-free model and is timed once per shape for reference.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import keep_freed_memory, write_result  # noqa: E402


SHAPES = {
    "4×256, batch 8×128": dict(config=dict(n_layer=4, n_embd=256, n_head=8, vocab_size=5000), batch=(8, 128)),
    "GPT-2 small (12×768, vocab 50257), batch 2×256": dict(
        config=dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257), batch=(2, 256)
    ),
    "quick (2×32), batch 2×16": dict(config=dict(n_layer=2, n_embd=32, n_head=4, vocab_size=100), batch=(2, 16)),
}
TASKS = {
    "causal LM, features axis": ("lm", "features"),
    "sequence classification, features axis": ("classification", "features"),
    "sequence classification, sequence axis": ("classification", "sequence"),
}


def batch_for(shape: str, task: str):
    settings = SHAPES[shape]
    batch, length = settings["batch"]
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, settings["config"]["vocab_size"], (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[::2, length // 2 :] = 0  # per-batch padding: half the rows are half as long
    labels = input_ids if task == "lm" else torch.randint(0, 4, (batch,), generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def build(kind: str, shape: str, task: str, axis: str):
    """A step closure for GPT-2 or for GAAM-GPT2 with GPT-2's weights (only GAAM's parameters are new)."""
    import hf_heads

    settings = SHAPES[shape]
    common = dict(**settings["config"], n_positions=1024, pad_token_id=0, attn_implementation="sdpa")
    if task == "classification":
        common["num_labels"] = 4
    torch.manual_seed(0)
    gpt2_class = GPT2LMHeadModel if task == "lm" else GPT2ForSequenceClassification
    gpt2 = gpt2_class(GPT2Config(**common))
    if kind == "gpt2":
        model = gpt2
    else:
        gaam_class = hf_heads.GaamGPT2LMHeadModel if task == "lm" else hf_heads.GaamGPT2ForSequenceClassification
        config = hf_heads.GaamGPT2Config(
            **common, gaam_placement=kind, gaam_num_heads=4, gaam_num_gaussians=5, gaam_norm_axis=axis
        )
        model = gaam_class(config)
        model.load_state_dict(gpt2.state_dict(), strict=False)
        for module in model.modules():
            if type(module).__name__ == "GaamGate":  # open, so GAAM's backward runs as in a trained model
                torch.nn.init.constant_(module.weight, 1.0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = batch_for(shape, task)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        optimizer.step()

    return step


def per_turn_ratios(baseline, candidate, turns: int, steps_per_turn: int) -> tuple[list[float], float, float]:
    """Per-turn ratios candidate / baseline, and the median seconds per step of each."""
    baseline(), candidate()  # warm-up: optimizer state and one-time allocations
    ratios, baseline_times, candidate_times = [], [], []
    for turn in range(turns):
        # Alternate which runs first, so neither always follows the other's cache footprint.
        order = (baseline, candidate) if turn % 2 == 0 else (candidate, baseline)
        times = {}
        for function in order:
            start = time.perf_counter()
            for _ in range(steps_per_turn):
                function()
            times[function] = (time.perf_counter() - start) / steps_per_turn
        baseline_times.append(times[baseline])
        candidate_times.append(times[candidate])
        ratios.append(times[candidate] / times[baseline])
    return ratios, statistics.median(baseline_times), statistics.median(candidate_times)


def median_with_interval(values: list[float]) -> tuple[float, float, float]:
    """Median and a distribution-free 95% interval for it (binomial order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    half_width = 1.96 * (n**0.5) / 2
    low = max(int(n / 2 - half_width), 0)
    high = min(int(n / 2 + half_width + 1), n - 1)
    return statistics.median(ordered), ordered[low], ordered[high]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny shape, 3 turns (to keep the script working)")
    parser.add_argument("--turns", type=int, default=15, help="interleaved turns per comparison (default 15)")
    parser.add_argument(
        "--steps-per-turn", type=int, default=2, help="consecutive steps per model and turn (default 2)"
    )
    parser.add_argument("--shapes", nargs="*", default=None, help="a subset of the shape names")
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    if options.quick:
        shapes, turns, options.steps_per_turn = ["quick (2×32), batch 2×16"], 3, 1
    else:
        shapes, turns = options.shapes or [name for name in SHAPES if not name.startswith("quick")], options.turns
    kept = keep_freed_memory()

    lines = [
        f"Training step (forward, backward, AdamW), float32, CPU, {torch.get_num_threads()} threads; {turns} turns "
        f"per comparison of {options.steps_per_turn} consecutive steps per model, GPT-2 and GAAM-GPT2 alternating; "
        f"freed memory {'kept by glibc' if kept else 'returned to the system (glibc settings unavailable)'}. GAAM "
        "\"augment\", H=4, G=5, every block, gate open. Ratio = GAAM-GPT2 / GPT-2 per turn: median and 95% "
        "interval.\n",
        "| shape | task | GPT-2 ms | GAAM-GPT2 ms | ratio (median) | 95% interval |",
        "|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        for task_name, (task, axis) in TASKS.items():
            ratios, gpt2_seconds, gaam_seconds = per_turn_ratios(
                build("gpt2", shape, task, axis), build("augment", shape, task, axis), turns, options.steps_per_turn
            )
            median, low, high = median_with_interval(ratios)
            lines.append(
                f"| {shape} | {task_name} | {gpt2_seconds * 1e3:.0f} | {gaam_seconds * 1e3:.0f} | {median:.3f} | "
                f"[{low:.3f}, {high:.3f}] |"
            )
            print(lines[-1], flush=True)
    lines.append(
        "\nThe 95% interval is that of the median of the per-turn ratios (order statistics of a binomial(n, 1/2)); "
        "the target is a median within 1.05 with the interval's upper end at most 1.08."
    )
    path = write_result("gaam_gpt2_step", "\n".join(lines) + "\n", options.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
