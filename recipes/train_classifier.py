"""Fine-tune a text classifier: `python recipes/train_classifier.py --help`.

The logic lives in `hf_heads.training.classification`."""

import sys

from hf_heads.training.classification import command_line


if __name__ == "__main__":
    sys.exit(command_line())
