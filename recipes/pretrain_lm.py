"""Pretrain a causal language model: `python recipes/pretrain_lm.py --help`.

The logic lives in `hf_heads.training.language_modeling`."""

from hf_heads.training.language_modeling import main


if __name__ == "__main__":
    main()
