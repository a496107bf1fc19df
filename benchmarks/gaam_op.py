"""Forward + backward time and peak memory of `hf_heads.GaussianAdaptiveAttention` vs the reference package.

Rows: (batch 8, seq 512, hidden 768), axes "sequence" and "features", (H, G) in {(4, 5), (16, 20)}. Times are
medians over repeats; the ratio is reference / ours, both measured in the same run. Peak memory is the growth of the
process's maximum resident set over the step, each implementation measured in its own fresh process.
"""

import argparse
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import in_fresh_process, median_seconds, peak_memory_mib, write_result  # noqa: E402


AXES = {"sequence": 1, "features": -1}


def build(implementation: str, axis: int, heads: int, gaussians: int):
    torch.manual_seed(0)
    if implementation == "reference":
        from gaussian_adaptive_attention import MultiHeadGaussianAdaptiveAttention

        return MultiHeadGaussianAdaptiveAttention(axis, heads, gaussians)
    from hf_heads import from_reference

    return from_reference(build("reference", axis, heads, gaussians))


def step(layer, x):
    x.grad = None
    layer.zero_grad(set_to_none=True)
    layer(x).sum().backward()


def measure_peak_memory(implementation, shape, axis, heads, gaussians) -> float:
    """Run in a fresh process (`in_fresh_process`): MiB one forward + backward adds to the resident set at its peak."""
    layer = build(implementation, axis, heads, gaussians)
    x = torch.randn(shape, requires_grad=True)
    step(layer, x)  # warm-up: one-time allocations are not the step's
    return peak_memory_mib(lambda: step(layer, x))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (to keep the script working)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write the .md (default: results/)")
    args = parser.parse_args()
    shape = (2, 32, 48) if args.quick else (8, 512, 768)
    repeats = 1 if args.quick else args.repeats
    settings = [(4, 5), (16, 20)] if not args.quick else [(4, 5)]

    rows = []
    for axis_name, axis in AXES.items():
        for heads, gaussians in settings:
            x = torch.randn(shape, requires_grad=True)
            seconds, memory = {}, {}
            for implementation in ("reference", "ours"):
                layer = build(implementation, axis, heads, gaussians)
                seconds[implementation] = median_seconds(lambda: step(layer, x), repeats)
                memory[implementation] = in_fresh_process(
                    "gaam_op", "measure_peak_memory", implementation, list(shape), axis, heads, gaussians
                )
            rows.append((axis_name, heads, gaussians, seconds, memory))
            print(rows[-1], flush=True)

    lines = [
        f"Input {shape}, float32, CPU, forward + backward; median of {repeats} runs after one warm-up.\n",
        "| axis | H | G | reference ms | ours ms | speed-up | reference peak MiB | ours peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for axis_name, heads, gaussians, seconds, memory in rows:
        lines.append(
            f"| {axis_name} | {heads} | {gaussians} | {seconds['reference'] * 1e3:.1f} | {seconds['ours'] * 1e3:.1f} | "
            f"{seconds['reference'] / seconds['ours']:.1f}x | {memory['reference']:.0f} | {memory['ours']:.0f} |"
        )
    path = write_result("gaam_op", "\n".join(lines) + "\n", args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
