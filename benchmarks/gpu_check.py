"""The GPU check (`make gpu-check`): what this package does on one CUDA GPU, in at most about 5 minutes.

1. correctness: the GAAM op on the GPU (float32, padded and unpadded, every normalization) against a float64 CPU run
   of the same module;
2. the GAAM op, forward + backward at (8, 512, 768), against the reference package and `torch.nn.LayerNorm` on the
   same tensor, float32 and bfloat16, both axes, (H, G) in {(4, 5), (16, 20)};
3. GAAM-GPT2 "augment" training-step overhead against `transformers`' GPT-2 with the same weights under bf16 autocast
   (GPT-2-small shapes): the median of per-turn ratios with a 95% interval;
4. a short BBC News run of `recipes/train_classifier.py` under `accelerate launch --config_file
   recipes/accelerate/gpu_bf16.yaml`.

GPU machines may be offline and carry an older torch/transformers: the check uses what the machine has, with any
wheels placed in `.gpu-wheels/` installed first by `make gpu-check`. Each section is recorded even when another fails.
Without CUDA it prints why and exits 0 without writing anything.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


REPOSITORY = Path(__file__).resolve().parent.parent
SHAPE = (8, 512, 768)
SETTINGS = ((4, 5), (16, 20))
AXES = {"features": -1, "sequence": 1}


def cuda_turns(functions: dict, repeats: int, warmup: int = 2) -> dict:
    """Per-turn times in ms of each function, run in turns (a, b, a, b, ...) and timed with CUDA events."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    torch.cuda.synchronize()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return times


def median_with_interval(values: list[float]) -> tuple[float, float, float]:
    """Median and a distribution-free 95% interval for it (order statistics of the binomial(n, 1/2))."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 6:
        return statistics.median(ordered), ordered[0], ordered[-1]
    half_width = 1.96 * (n**0.5) / 2
    low = max(int(n / 2 - half_width), 0)
    high = min(int(n / 2 + half_width + 1), n - 1)
    return statistics.median(ordered), ordered[low], ordered[high]


def normalizations() -> list[str]:
    import inspect

    from hf_heads import GaussianAdaptiveAttention

    parameter = inspect.signature(GaussianAdaptiveAttention).parameters.get("normalization")
    return ["sum"] if parameter is None else ["sum", "mean", "none"]


def check_correctness() -> list[str]:
    from hf_heads import GaussianAdaptiveAttention

    lines = ["| axis | normalization | padding | max abs error (CUDA fp32 vs CPU fp64), output | weights grad |", "|---|---|---|---|---|"]
    for axis_name, axis in AXES.items():
        for normalization in normalizations():
            for padded in (False, True):
                torch.manual_seed(0)
                kwargs = {} if normalization == "sum" else {"normalization": normalization}
                layer = GaussianAdaptiveAttention(4, 5, axis, **kwargs)
                x = torch.randn(4, 64, 96, dtype=torch.float64)
                mask = torch.ones(4, 64, dtype=torch.long)
                if padded:
                    mask[1, :20] = 0
                    mask[2, 40:] = 0
                results = []
                for device, dtype in (("cpu", torch.float64), ("cuda", torch.float32)):
                    layer_here = layer.to(device=device, dtype=dtype)
                    layer_here.zero_grad(set_to_none=True)
                    out = layer_here(x.to(device, dtype), attention_mask=mask.to(device) if padded else None)
                    out.square().sum().backward()
                    results.append((out.detach().double().cpu(), layer_here.c.grad.detach().double().cpu()))
                (out64, grad64), (out32, grad32) = results
                scale = max(grad64.abs().max().item(), 1e-12)
                lines.append(
                    f"| {axis_name} | {normalization} | {'yes' if padded else 'no'} | "
                    f"{(out64 - out32).abs().max().item():.2e} | {(grad64 - grad32).abs().max().item() / scale:.2e} (relative) |"
                )
    return lines


def op_timings(repeats: int) -> list[str]:
    from gaussian_adaptive_attention import MultiHeadGaussianAdaptiveAttention

    from hf_heads import from_reference

    lines = [
        f"Input {SHAPE}, forward + backward, median ms over {repeats} interleaved turns (CUDA events); ratios to "
        "`torch.nn.LayerNorm` on the same tensor.\n",
        "| dtype | axis | H | G | LayerNorm ms | ours ms | ours / LayerNorm | reference ms | reference / ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype in (torch.float32, torch.bfloat16):
        for axis_name, axis in AXES.items():
            for heads, gaussians in SETTINGS:
                torch.manual_seed(0)
                reference = MultiHeadGaussianAdaptiveAttention(axis, heads, gaussians).cuda()
                ours = from_reference(reference).cuda()
                layer_norm = torch.nn.LayerNorm(SHAPE[-1]).cuda()
                x = torch.randn(SHAPE, device="cuda", dtype=dtype, requires_grad=True)

                def step(module, autocast=dtype == torch.bfloat16):
                    def run():
                        x.grad = None
                        module.zero_grad(set_to_none=True)
                        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                            module(x).float().sum().backward()

                    return run

                functions = {"layer_norm": step(layer_norm), "ours": step(ours)}
                try:
                    step(reference)()
                    functions["reference"] = step(reference)
                except Exception as error:  # the reference package is not written for every dtype
                    reference_error = f"fails: {type(error).__name__}"
                times = {name: statistics.median(values) for name, values in cuda_turns(functions, repeats).items()}
                reference_cells = (
                    f"{times['reference']:.2f} | {times['reference'] / times['ours']:.1f}x"
                    if "reference" in times
                    else f"{reference_error} | -"
                )
                lines.append(
                    f"| {str(dtype).replace('torch.', '')} | {axis_name} | {heads} | {gaussians} | {times['layer_norm']:.2f} | "
                    f"{times['ours']:.2f} | {times['ours'] / times['layer_norm']:.2f}x | {reference_cells} |"
                )
                print(lines[-1], flush=True)
    return lines


def step_overhead(repeats: int) -> list[str]:
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    import hf_heads

    size = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, pad_token_id=0)
    batch, length = 8, 512
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, size["vocab_size"], (batch, length), generator=generator).cuda()
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[::2, length // 2 :] = 0  # half the rows right-padded to half length, as per-batch padding gives
    attention_mask = attention_mask.cuda()
    labels = torch.randint(0, 4, (batch,), generator=generator).cuda()

    cases = {
        "causal LM, features axis": (GPT2LMHeadModel, hf_heads.GaamGPT2LMHeadModel, "features"),
        "sequence classification, features axis": (
            GPT2ForSequenceClassification,
            hf_heads.GaamGPT2ForSequenceClassification,
            "features",
        ),
        "sequence classification, sequence axis": (
            GPT2ForSequenceClassification,
            hf_heads.GaamGPT2ForSequenceClassification,
            "sequence",
        ),
    }
    lines = [
        f"Training step (forward, backward, AdamW) at GPT-2-small shapes (12×768), batch {batch}×{length}, bf16 autocast, "
        f"SDPA; GAAM \"augment\" in every block (H=4, G=5) with the gate open; {repeats} interleaved turns. The ratio is "
        "GAAM-GPT2 / GPT-2 per turn; median and 95% interval.\n",
        "| model | GPT-2 ms | GAAM-GPT2 ms | ratio (median) | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for name, (gpt2_class, gaam_class, axis) in cases.items():
        torch.manual_seed(0)
        num_labels = {} if gpt2_class is GPT2LMHeadModel else {"num_labels": 4}
        gpt2 = gpt2_class(GPT2Config(**size, **num_labels, attn_implementation="sdpa")).cuda()
        config = hf_heads.GaamGPT2Config(
            **size, **num_labels, gaam_placement="augment", gaam_norm_axis=axis, attn_implementation="sdpa"
        )
        if gpt2_class is GPT2ForSequenceClassification:
            config.classifier_pooling = "last"
        gaam = gaam_class(config).cuda()
        gaam.load_state_dict(gpt2.state_dict(), strict=False)
        for module in gaam.modules():
            if type(module).__name__ == "GaamGate":
                torch.nn.init.constant_(module.weight, 1.0)

        def trainer(model):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            targets = input_ids if gpt2_class is GPT2LMHeadModel else labels

            def run():
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=targets).loss
                loss.backward()
                optimizer.step()

            return run

        times = cuda_turns({"gpt2": trainer(gpt2), "gaam": trainer(gaam)}, repeats)
        ratios = [g / b for g, b in zip(times["gaam"], times["gpt2"])]
        median, low, high = median_with_interval(ratios)
        lines.append(
            f"| {name} | {statistics.median(times['gpt2']):.1f} | {statistics.median(times['gaam']):.1f} | "
            f"{median:.3f} | [{low:.3f}, {high:.3f}] |"
        )
        print(lines[-1], flush=True)
        del gpt2, gaam
        torch.cuda.empty_cache()
    return lines


def recipe_run(epochs: int) -> list[str]:
    output_dir = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "bbc"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "recipes/accelerate/gpu_bf16.yaml",
        "recipes/train_classifier.py",
        "--model_type", "gaam_gpt2",
        "--config_overrides", "n_layer=4,n_embd=256,n_head=8,gaam_norm_axis=sequence,classifier_pooling=mean",
        "--dataset_name", "bbc_news",
        "--max_length", "256",
        "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "32",
        "--learning_rate", "5e-4",
        "--output_dir", str(output_dir),
        "--report_to", "none",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - start
    printed = " ".join(command[3:])
    lines = [f"`accelerate launch {printed}`\n"]
    if result.returncode != 0:
        return lines + [f"Failed (exit {result.returncode}) after {seconds:.0f} s:\n", "```", result.stderr[-3000:], "```"]
    results_file = output_dir / "all_results.json"
    metrics = json.loads(results_file.read_text()) if results_file.exists() else {}
    shown = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    mixed = "bf16" if "bf16" in result.stdout + result.stderr or "mixed_precision" in result.stderr else "see log"
    lines += [
        f"Wall time {seconds:.0f} s (launch, data, training, evaluation, saving). Mixed precision: {mixed}.\n",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {value:.4g} |" for key, value in sorted(shown.items())],
    ]
    return lines


def machine_packages() -> str:
    """Whether this package imports with the machine's own packages alone (without the carried wheels)."""
    code = "import transformers; print(transformers.__version__); import hf_heads"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPOSITORY)
    version = result.stdout.strip() or "none"
    if result.returncode == 0:
        return f"- with the machine's own packages (transformers {version}), `import hf_heads` works"
    reason = (result.stderr.strip().splitlines() or ["?"])[-1]
    return f"- with the machine's own packages (transformers {version}), `import hf_heads` fails: {reason}"


def environment() -> list[str]:
    import transformers

    try:
        import accelerate

        accelerate_version = accelerate.__version__
    except ImportError:
        accelerate_version = "not installed"
    properties = torch.cuda.get_device_properties(0)
    return [
        f"- device: {torch.cuda.get_device_name(0)} ({properties.total_memory / 2**30:.0f} GiB, "
        f"{properties.multi_processor_count} multiprocessors)",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
        f"accelerate {accelerate_version}, Python {platform.python_version()}",
        machine_packages(),
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved turns per timing (default 15)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the BBC recipe run (default 3)")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write gpu.md (default: results/)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["correctness", "op", "step", "recipe"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available here; nothing measured, nothing written.")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in the correctness section

    sections = {
        "Correctness": lambda: check_correctness(),
        "GAAM op against LayerNorm and the reference": lambda: op_timings(args.repeats),
        "GAAM-GPT2 step overhead under bf16 autocast": lambda: step_overhead(args.repeats),
        "BBC News recipe under accelerate (gpu_bf16.yaml)": lambda: recipe_run(args.epochs),
    }
    keys = dict(zip(sections, ["correctness", "op", "step", "recipe"]))
    body = environment()
    for title, section in sections.items():
        if keys[title] in args.skip:
            continue
        start = time.perf_counter()
        try:
            lines = section()
        except Exception:
            lines = ["Failed:\n", "```", traceback.format_exc()[-3000:], "```"]
        body += [f"## {title}\n", *lines, f"\n({time.perf_counter() - start:.0f} s)\n"]
        print("\n".join(body[-len(lines) - 2 :]), flush=True)
        write_result("gpu", "\n".join(body) + "\n", args.results_dir)
    print(write_result("gpu", "\n".join(body) + "\n", args.results_dir).read_text())


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
