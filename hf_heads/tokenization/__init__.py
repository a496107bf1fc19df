from .bpe import train_bpe_tokenizer
from .tokenization_char import TEXT8_ALPHABET, CharTokenizer


__all__ = ["TEXT8_ALPHABET", "CharTokenizer", "train_bpe_tokenizer"]
