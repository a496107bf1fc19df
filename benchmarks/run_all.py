"""`make bench`: run every benchmark script in this folder; each rewrites its file in `results/`."""

import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("*.py")):
    # conformance.py needs a transformers checkout (--transformers-tests), which `make bench` does not fetch.
    if script.name.startswith("_") or script.name in ("run_all.py", "conformance.py"):
        continue
    print(f"== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script)], check=True)
