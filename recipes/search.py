"""Hyperparameter search over a recipe: `python recipes/search.py --help` (the logic: `hf_heads.training.search`)."""

import sys

from hf_heads.training.search import command_line


if __name__ == "__main__":
    sys.exit(command_line())
