"""Pretrain a causal language model: `python recipes/pretrain_lm.py --help`.

The logic lives in `hf_heads.training.language_modeling`."""

import sys

from hf_heads.training.language_modeling import command_line


if __name__ == "__main__":
    sys.exit(command_line())
