"""Training-step cost of GAAM-GPT2 against `transformers`' GPT-2 of the same size and weights (CPU).

A causal-LM training step (forward with labels, backward, AdamW update) of GPT-2, of GAAM-GPT2 with GAAM
"augment" in every block (H=4, G=5, features axis) and of GAAM-GPT2 with GAAM "replace" in every block, at GPT-2-small
shapes and at a tiny shape. Times are medians over repeats taken in turns within one run; overhead is relative to
GPT-2. Peak memory is what one step adds to the resident set, each model in its own fresh process.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import in_fresh_process, interleaved_median_seconds, peak_memory_mib, write_result  # noqa: E402


SHAPES = {
    "GPT-2 small (12×768, vocab 50257), batch 2×256": dict(
        config=dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024), batch=(2, 256)
    ),
    "tiny (2×128, vocab 1000), batch 8×128": dict(
        config=dict(n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=256), batch=(8, 128)
    ),
    "quick (2×32, vocab 100), batch 2×16": dict(
        config=dict(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64), batch=(2, 16)
    ),
}
KINDS = ("gpt2", "augment", "replace")


def build(kind: str, shape: str):
    """The model and a step closure; GAAM-GPT2 gets GPT-2's weights (its own GAAM parameters are new)."""
    import hf_heads

    settings = SHAPES[shape]
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(**settings["config"], attn_implementation="sdpa"))
    if kind == "gpt2":
        model = gpt2
    else:
        config = hf_heads.GaamGPT2Config(
            **settings["config"], gaam_placement=kind, gaam_num_heads=4, gaam_num_gaussians=5, attn_implementation="sdpa"
        )
        model = hf_heads.GaamGPT2LMHeadModel(config)
        model.load_state_dict(gpt2.state_dict(), strict=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch, length = settings["batch"]
    input_ids = torch.randint(0, settings["config"]["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(0))

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()

    return step


def measure_peak_memory(kind: str, shape: str) -> float:
    step = build(kind, shape)
    step()  # warm-up: optimizer state and one-time allocations are not the step's
    return peak_memory_mib(step)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny shape, one repeat (to keep the script working)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--results-dir", type=Path, default=None)
    options = parser.parse_args()
    shapes = [name for name in SHAPES if name.startswith("quick")] if options.quick else [
        name for name in SHAPES if not name.startswith("quick")
    ]
    repeats = 1 if options.quick else options.repeats

    lines = [
        f"Causal-LM training step (forward + backward + AdamW), float32, CPU; median of {repeats} turns after one "
        "warm-up. GAAM: H=4, G=5, features axis, every block.\n",
        "| shape | model | step ms | overhead vs GPT-2 | peak MiB |",
        "|---|---|---|---|---|",
    ]
    for shape in shapes:
        seconds = interleaved_median_seconds({kind: build(kind, shape) for kind in KINDS}, repeats)
        for kind in KINDS:
            memory = in_fresh_process("gaam_gpt2_step", "measure_peak_memory", kind, shape)
            name = {"gpt2": "GPT-2 (transformers)", "augment": "GAAM-GPT2 augment", "replace": "GAAM-GPT2 replace"}[kind]
            overhead = "baseline" if kind == "gpt2" else f"{seconds[kind] / seconds['gpt2'] - 1:+.1%}"
            lines.append(f"| {shape} | {name} | {seconds[kind] * 1e3:.0f} | {overhead} | {memory:.0f} |")
            print(lines[-1], flush=True)
    lines.append(
        "\n\"replace\" removes each block's attention, so it is cheaper than GPT-2 (and a different model): its row "
        "shows what GAAM costs in place of attention, not an overhead."
    )
    path = write_result("gaam_gpt2_step", "\n".join(lines) + "\n", options.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
