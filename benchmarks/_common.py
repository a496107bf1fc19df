"""Shared pieces of the benchmark scripts: timing, machine description, result files."""

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch


RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(function, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}; {os.cpu_count()} cores, torch {torch.__version__} using {torch.get_num_threads()} threads; "
        f"GPU: {gpu}; Python {platform.python_version()}"
    )


def write_result(name: str, body: str, results_dir: Path | None = None) -> Path:
    """Write `benchmarks/results/<name>.md`, headed by the command that produced it, the machine and the date."""
    command = "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    header = (
        f"# {name}\n\n"
        f"- command: `{command}`\n"
        f"- machine: {machine()}\n"
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
    )
    results_dir = Path(results_dir or RESULTS)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.md"
    path.write_text(header + body)
    return path
