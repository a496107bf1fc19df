"""Hyperparameter search over a recipe: `python recipes/search.py --help` (the logic: `hf_heads.training.search`)."""

from hf_heads.training.search import main


if __name__ == "__main__":
    main()
