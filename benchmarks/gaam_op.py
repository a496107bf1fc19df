"""Forward + backward time of `hf_heads.GaussianAdaptiveAttention` against `torch.nn.LayerNorm` and the reference.

Input (batch 8, seq 512, hidden 768) float32; axes "sequence" (norm_axis=1) and "features" (norm_axis=-1); (H, G) in
{(4, 5), (16, 20)}; plus "sequence, padded": the sequence axis with an `attention_mask` (rows of 512 down to 232 real
positions, each row split into heads over its own real positions). Columns:

- ours: the op as users get it (on CPU, the fused kernel);
- exact path: the same op with the fused kernel switched off (its PyTorch implementation, the fallback);
- LayerNorm: `torch.nn.LayerNorm(768)` on the same tensor, the memory-traffic class of the op;
- reference: the reference package (it has no attention mask, so padded rows have no reference figure).

Every implementation of a row runs in interleaved turns (one step each, in turn, `--repeats` times after a warm-up),
so machine load hits them alike; a ratio is the median of the per-turn ratios. On a shared machine a longer step is
more often preempted, which inflates its wall-clock time; with one thread the process's CPU time is not, so 1-thread
rows also give the ratio of CPU times (the figure for an idle core). Each row is measured at every thread
count of `--threads` (the slow reference at the first one only). Peak memory is the growth of the process's maximum
resident set over one step, each implementation in its own fresh process.

The backward starts from a dense upstream gradient (a fixed random tensor), as inside a network. A `.sum().backward()`
would hand both ops an expanded gradient of ones instead, which LayerNorm's backward first copies into a dense tensor:
~1 ms of its ~5 ms at one thread, which made the ratios look 10-15% better than in a model.

glibc keeps freed memory in the process while the times are taken (`keep_freed_memory`), as the step benchmark
does: with its default settings, whether a freed 12 MiB tensor goes back to the kernel, to be faulted in again page
by page at the next step, depends on the heap's history (the allocations of the implementations timed before), which
adds noise to both columns. `--glibc-defaults` measures with the defaults (`results/gaam_op_glibc_defaults.md`).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import in_fresh_process, keep_freed_memory, peak_memory_mib, write_result  # noqa: E402


AXES = {"sequence": 1, "features": -1, "sequence, padded": 1}


def padding_mask(shape):
    """Real positions from the full length down to 45% of it, right-padded."""
    batch, length = shape[:2]
    real = torch.linspace(length, 0.45 * length, batch).long()
    return (torch.arange(length) < real[:, None]).long()


def build(implementation: str, axis: int, heads: int, gaussians: int):
    torch.manual_seed(0)
    if implementation == "layernorm":
        return None
    if implementation == "reference":
        from gaussian_adaptive_attention import MultiHeadGaussianAdaptiveAttention

        return MultiHeadGaussianAdaptiveAttention(axis, heads, gaussians)
    from hf_heads import from_reference

    return from_reference(build("reference", axis, heads, gaussians))


def upstream_gradient(shape) -> torch.Tensor:
    """The gradient every implementation's backward starts from: dense, the same for all."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def stepper(implementation: str, axis_name: str, heads: int, gaussians: int, x: torch.Tensor):
    """One forward + backward of `implementation` on `x`, as a function of no arguments."""
    import hf_heads.gaam.layer as gaam_layer

    if implementation == "layernorm":
        layer = torch.nn.LayerNorm(x.shape[-1])
        forward = layer
    else:
        layer = build(implementation, AXES[axis_name], heads, gaussians)
        mask = padding_mask(x.shape) if axis_name == "sequence, padded" else None
        forward = (lambda x: layer(x, attention_mask=mask)) if mask is not None else layer
    upstream = upstream_gradient(x.shape)

    def step():
        # The exact path is the op with its fused kernel unavailable (what a machine without a compiler runs).
        saved = gaam_layer._kernel
        if implementation == "exact path":
            gaam_layer._kernel = False
        try:
            x.grad = None
            layer.zero_grad(set_to_none=True)
            forward(x).backward(upstream)
        finally:
            gaam_layer._kernel = saved

    return step


def measure_peak_memory(implementation, axis_name, shape, heads, gaussians) -> float:
    """Run in a fresh process (`in_fresh_process`): MiB one forward + backward adds to the resident set at its peak."""
    x = torch.randn(shape, requires_grad=True)
    step = stepper(implementation, axis_name, heads, gaussians, x)
    step()  # warm-up: one-time allocations (and the kernel's build) are not the step's
    return peak_memory_mib(step)


def interleaved_turns(steps: dict, repeats: int):
    """Wall-clock and process CPU seconds per turn of each step, in turns (a, b, c, a, b, c, ...) after a warm-up."""
    for step in steps.values():
        step()
    seconds = {name: [] for name in steps}
    cpu_seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - cpu_start)
    return seconds, cpu_seconds


def median_ratio(numerator, denominator) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (to keep the script working)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="torch thread counts to measure at (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory columns (fresh processes)")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write the .md (default: results/)")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="let glibc return freed memory to the kernel, as by default (page faults included)")
    args = parser.parse_args()
    kept = False if args.glibc_defaults else keep_freed_memory()
    shape = (2, 32, 48) if args.quick else (8, 512, 768)
    repeats = 1 if args.quick else args.repeats
    settings = [(4, 5), (16, 20)] if not args.quick else [(4, 5)]

    load_before = os.getloadavg()[0]
    rows = []
    for axis_name in AXES:
        for heads, gaussians in settings:
            x = torch.randn(shape, requires_grad=True)
            implementations = ["ours", "layernorm", "exact path"]
            if axis_name != "sequence, padded":
                implementations.append("reference")
            steps = {name: stepper(name, axis_name, heads, gaussians, x) for name in implementations}
            memory = {}
            if not args.no_memory:
                for name in ("ours", "reference"):
                    if name in implementations:
                        memory[name] = in_fresh_process(
                            "gaam_op", "measure_peak_memory", name, axis_name, list(shape), heads, gaussians
                        )
            for threads in args.threads:
                torch.set_num_threads(threads)
                if threads != args.threads[0]:  # the reference's speed-up is measured at the first thread count only
                    steps.pop("reference", None)
                seconds, cpu_seconds = interleaved_turns(steps, repeats)
                rows.append((axis_name, heads, gaussians, threads, seconds, cpu_seconds, memory))
                print(axis_name, heads, gaussians, threads,
                      {k: f"{statistics.median(v) * 1e3:.1f} ms" for k, v in seconds.items()}, flush=True)

    lines = [
        f"Input {shape}, float32, CPU, forward + backward from a dense upstream gradient. {repeats} interleaved turns "
        "after a warm-up; times are medians, ratios the median of per-turn ratios. Freed memory "
        + ("kept in the process by glibc (`keep_freed_memory`)" if kept else "returned to the kernel (glibc default)")
        + ".\n",
        f"Load average while it ran: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on "
        f"{os.cpu_count()} cores"
        + (
            " (above the core count: the machine was shared with other jobs, which slows every column; the "
            "interleaved turns make the ratios comparable, not the times).\n"
            if max(load_before, os.getloadavg()[0]) > os.cpu_count()
            else ".\n"
        ),
        "| axis | H | G | threads | ours ms | LayerNorm ms | **ours / LayerNorm** | ours / LayerNorm, CPU time | "
        "exact path ms | exact path / LayerNorm | reference ms | reference / ours | ours peak MiB | "
        "reference peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(seconds, name):
        return f"{statistics.median(seconds[name]) * 1e3:.1f}" if name in seconds else "—"

    for axis_name, heads, gaussians, threads, seconds, cpu_seconds, memory in rows:
        reference_ratio = (
            f"{median_ratio(seconds['reference'], seconds['ours']):.1f}x" if "reference" in seconds else "—"
        )
        cpu_ratio = f"{median_ratio(cpu_seconds['ours'], cpu_seconds['layernorm']):.2f}x" if threads == 1 else "—"
        lines.append(
            f"| {axis_name} | {heads} | {gaussians} | {threads} | {ms(seconds, 'ours')} | "
            f"{ms(seconds, 'layernorm')} | **{median_ratio(seconds['ours'], seconds['layernorm']):.2f}x** | "
            f"{cpu_ratio} | {ms(seconds, 'exact path')} | "
            f"{median_ratio(seconds['exact path'], seconds['layernorm']):.1f}x | {ms(seconds, 'reference')} | "
            f"{reference_ratio} | "
            + " | ".join(f"{memory[name]:.0f}" if name in memory else "—" for name in ("ours", "reference"))
            + " |"
        )
    name = "gaam_op_glibc_defaults" if args.glibc_defaults else "gaam_op"
    path = write_result(name, "\n".join(lines) + "\n", args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
