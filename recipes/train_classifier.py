"""Fine-tune a text classifier: `python recipes/train_classifier.py --help`.

The logic lives in `hf_heads.training.classification`."""

from hf_heads.training.classification import main


if __name__ == "__main__":
    main()
