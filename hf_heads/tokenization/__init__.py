from .bpe import train_bpe_tokenizer


__all__ = ["train_bpe_tokenizer"]
