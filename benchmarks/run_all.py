"""`make bench`: run every benchmark script in this folder; each rewrites its file in `results/`."""

import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("*.py")):
    # gpu_check.py runs on a GPU machine (`make gpu-check`); conformance.py needs transformers' own test files;
    # kernel_versions.py compares the kernel revisions named on its command line.
    if script.name.startswith("_") or script.name in ("run_all.py", "gpu_check.py", "conformance.py",
                                                      "kernel_versions.py"):
        continue
    print(f"== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script)], check=True)
