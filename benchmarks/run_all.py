"""`make bench`: run every benchmark script in this folder; each rewrites its file in `results/`."""

import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("*.py")):
    if script.name.startswith("_") or script.name == "run_all.py":
        continue
    print(f"== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script)], check=True)
