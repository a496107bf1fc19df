"""Forward + backward time of the GAAM op with the fused kernel of other git revisions swapped in.

The figures for a kernel change: each revision's `hf_heads/gaam/gaam_kernel.cpp` is built as `layer.py` builds it
and serves the op as users call it (the same autograd function, layout and allocations; only the compiled kernel
differs), in interleaved turns with the other revisions and `torch.nn.LayerNorm` on the same tensor. Ratios are
medians of per-turn ratios: against the first revision, and against LayerNorm. Every revision's output and input
gradient are checked against the first revision's (float32 tolerance); a revision that disagrees is marked.

    python benchmarks/kernel_versions.py 2910b16 HEAD             # two commits
    python benchmarks/kernel_versions.py HEAD worktree            # the last commit against uncommitted changes

A revision must have the kernel's current entry points (`gaam_forward_f32`, ..., `gaam_tile_columns`).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import keep_freed_memory, write_result  # noqa: E402
from gaam_op import AXES, build, interleaved_turns, median_ratio, padding_mask, upstream_gradient  # noqa: E402


REPOSITORY = Path(__file__).resolve().parents[1]
KERNEL_PATH = "hf_heads/gaam/gaam_kernel.cpp"
WORKTREE = "worktree"


def kernel_source(revision: str, folder: Path) -> Path:
    """The kernel source at `revision` (or the working tree's), written into `folder`."""
    if revision == WORKTREE:
        return REPOSITORY / KERNEL_PATH
    shown = subprocess.run(["git", "show", f"{revision}:{KERNEL_PATH}"], cwd=REPOSITORY, capture_output=True)
    if shown.returncode != 0:
        raise SystemExit(f"revision {revision!r}: no {KERNEL_PATH} there ({shown.stderr.decode().strip()})")
    path = folder / f"{revision.replace('/', '_')}.cpp"
    path.write_bytes(shown.stdout)
    return path


def kernel_step(kernel, layer, x, mask, upstream):
    """One forward + backward of `layer` on `x` with `kernel` serving the op; returns (output, grad of x)."""
    import hf_heads.gaam.layer as gaam_layer

    def step():
        saved, gaam_layer._kernel = gaam_layer._kernel, kernel
        try:
            x.grad = None
            layer.zero_grad(set_to_none=True)
            output = layer(x, attention_mask=mask)
            output.backward(upstream)
            return output, x.grad
        finally:
            gaam_layer._kernel = saved

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="*", default=["HEAD", WORKTREE],
                        help=f"git revisions, or {WORKTREE!r} for the working tree (default: HEAD {WORKTREE})")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (to keep the script working)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's)")
    parser.add_argument("--heads", type=int, nargs=2, default=[16, 20], metavar=("H", "G"),
                        help="heads and Gaussians per head (default: 16 20)")
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 512, 768], metavar=("BATCH", "SEQ", "HIDDEN"),
                        help="input shape (default: 8 512 768)")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write the .md (default: results/)")
    args = parser.parse_args()
    if len(set(args.revisions)) != len(args.revisions):
        parser.error(f"revisions must differ, got {args.revisions}")
    kept = keep_freed_memory()
    import hf_heads.gaam.layer as gaam_layer

    torch.set_num_threads(args.threads)
    shape = (2, 32, 48) if args.quick else tuple(args.shape)
    repeats = 1 if args.quick else args.repeats
    heads, gaussians = args.heads
    with tempfile.TemporaryDirectory() as folder:
        kernels = {revision: gaam_layer._build_kernel(kernel_source(revision, Path(folder)))
                   for revision in args.revisions}

    rows = []
    for axis_name, axis in AXES.items():
        layer = build("ours", axis, heads, gaussians)  # the reference's initialisation, as in gaam_op.py
        x = torch.randn(shape, requires_grad=True)
        mask = padding_mask(shape) if axis_name == "sequence, padded" else None
        upstream = upstream_gradient(shape)
        steps = {revision: kernel_step(kernel, layer, x, mask, upstream) for revision, kernel in kernels.items()}
        first = steps[args.revisions[0]]()
        agrees = {}
        for revision, step in steps.items():
            output, grad = step()
            agrees[revision] = all(
                torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5) for ours, theirs in zip((output, grad), first)
            )
        norm = torch.nn.LayerNorm(shape[-1])

        def layernorm():
            x.grad = None
            norm(x).backward(upstream)

        seconds, _ = interleaved_turns({**steps, "LayerNorm": layernorm}, repeats)
        for revision in args.revisions:
            rows.append((axis_name, revision, seconds, agrees[revision]))
        print(axis_name, {k: f"{statistics.median(v) * 1e3:.2f} ms" for k, v in seconds.items()}, flush=True)

    lines = [
        f"Input {shape}, float32, CPU, {args.threads} thread(s), H={heads}, G={gaussians}: the op's forward + "
        f"backward from a dense upstream gradient with each revision's kernel, {repeats} interleaved turns after a "
        "warm-up; times are medians, ratios medians of per-turn ratios. Freed memory "
        + ("kept in the process by glibc.\n" if kept else "returned to the kernel.\n"),
        "| axis | kernel of | ms | / first revision | / LayerNorm | output and input gradient as the first's |",
        "|---|---|---|---|---|---|",
    ]
    for axis_name, revision, seconds, agree in rows:
        lines.append(
            f"| {axis_name} | `{revision}` | {statistics.median(seconds[revision]) * 1e3:.2f} | "
            f"{median_ratio(seconds[revision], seconds[args.revisions[0]]):.3f} | "
            f"{median_ratio(seconds[revision], seconds['LayerNorm']):.2f}x | {'yes' if agree else '**differs**'} |"
        )
    path = write_result("kernel_versions", "\n".join(lines) + "\n", args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
