"""Shared pieces of the benchmark scripts: timing, machine description, result files."""

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
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


def interleaved_median_seconds(functions: dict, repeats: int, warmup: int = 1) -> dict:
    """Median time of each function, run in turns (a, b, a, b, ...) so that machine drift hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    timings = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in timings.items()}


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of unmapping it (True where that was possible).

    By default every block over glibc's mmap threshold (at most 32 MiB) is returned to the kernel when freed and
    faulted back in, page by page, when allocated again: at GPT-2-small shapes the ~100 MB logits and their gradients
    cost tens of thousands of page faults per training step, whose time varies from step to step by more than the
    differences a step benchmark measures. Serving them from the heap instead (what jemalloc or tcmalloc setups do)
    leaves the arithmetic to be compared. Call it before the first large allocation.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to set
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(step) -> float:
    """MiB that one call of `step` adds to the resident set at its peak (call it once before, as a warm-up).

    Large tensors are separate mappings that are returned to the OS when freed (see `in_fresh_process`), so
    sampling the resident set every millisecond while the step runs sees the step's peak.
    """
    baseline, peak, running = _resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step()
    running[0] = False
    sampler.join()
    return max(peak[0] - baseline, 0) / 2**20


def in_fresh_process(module: str, function: str, *arguments) -> float:
    """`module.function(*arguments)` (a benchmark script beside this file) in a fresh process; its printed number."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import {module}; "
        f"print({module}.{function}(*{json.dumps(arguments)}))"
    )
    # A fixed mmap threshold makes glibc return every large block to the OS when it is freed (its default threshold
    # grows after frees, keeping freed tensors resident), so the resident set follows live tensor memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return float(output.strip().splitlines()[-1])


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
