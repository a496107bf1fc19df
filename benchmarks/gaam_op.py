"""Forward + backward time and peak memory of `hf_heads.GaussianAdaptiveAttention` vs the reference package.

Rows: (batch 8, seq 512, hidden 768), axes "sequence" and "features", (H, G) in {(4, 5), (16, 20)}. Times are
medians over repeats; the ratio is reference / ours, both measured in the same run. Peak memory is the growth of the
process's maximum resident set over the step, each implementation measured in its own fresh process.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_seconds, write_result  # noqa: E402


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


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_peak_memory(implementation, shape, axis, heads, gaussians) -> float:
    """Run in a child process: MiB that one forward + backward adds to the resident set at its peak.

    Large tensors are separate mappings that are returned to the OS when freed (see the caller's mmap threshold),
    so sampling the resident set every millisecond while the step runs sees the step's peak.
    """
    layer = build(implementation, axis, heads, gaussians)
    x = torch.randn(shape, requires_grad=True)
    step(layer, x)  # warm-up: one-time allocations are not the step's
    baseline, peak, running = _resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step(layer, x)
    running[0] = False
    sampler.join()
    return max(peak[0] - baseline, 0) / 2**20


def peak_memory_in_fresh_process(*spec) -> float:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import gaam_op; "
        f"print(gaam_op.measure_peak_memory(*{json.dumps(spec)}))"
    )
    # A fixed mmap threshold makes glibc return every large block to the OS when it is freed (its default threshold
    # grows after frees, keeping freed tensors resident), so the resident set follows live tensor memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return float(output.strip().splitlines()[-1])


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
                memory[implementation] = peak_memory_in_fresh_process(
                    implementation, list(shape), axis, heads, gaussians
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
