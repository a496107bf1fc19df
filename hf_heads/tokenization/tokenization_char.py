"""A character-level tokenizer for text8-style language models: one token per character of a fixed alphabet.

This file imports nothing from `hf_heads`, so a saved tokenizer folder carries it for `trust_remote_code=True`.
"""

import json
import os

from transformers.tokenization_python import PreTrainedTokenizer


TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "
VOCAB_FILES_NAMES = {"vocab_file": "vocab.json"}


class CharTokenizer(PreTrainedTokenizer):
    r"""
    Construct a character tokenizer: every character of `alphabet` is one token, preceded by the special tokens.

    text8 (lower-case a–z and space) is the default alphabet. Characters outside it become `unk_token`, or are
    first lower-cased when `do_lower_case` is set, so ids never depend on characters the model has not seen.

    Args:
        vocab_file (`str`, *optional*):
            A `vocab.json` written by `save_pretrained` (token → id); when given, it defines the vocabulary and
            `alphabet` is ignored.
        alphabet (`str`, *optional*, defaults to `"abcdefghijklmnopqrstuvwxyz "`):
            The characters of the vocabulary, in id order after the special tokens. Each character once.
        do_lower_case (`bool`, *optional*, defaults to `True`):
            Lower-case text before splitting it into characters (text8 is lower case).
        pad_token, unk_token, eos_token (`str`):
            Special tokens; `eos_token` separates documents when text is packed into blocks and is also the BOS.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file=None,
        alphabet=TEXT8_ALPHABET,
        do_lower_case=True,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        **kwargs,
    ):
        specials = [pad_token, unk_token, eos_token]
        if vocab_file is not None:
            with open(vocab_file, encoding="utf-8") as handle:
                self.vocab = json.load(handle)
        else:
            if not isinstance(alphabet, str) or not alphabet:
                raise ValueError(f"`alphabet` must be a non-empty string of characters, got {alphabet!r}.")
            repeated = sorted({character for character in alphabet if alphabet.count(character) > 1})
            if repeated:
                raise ValueError(f"`alphabet` must list each character once; repeated: {repeated!r}.")
            clashes = [token for token in specials if len(str(token)) == 1 and str(token) in alphabet]
            if clashes:
                raise ValueError(f"special tokens {clashes!r} are characters of `alphabet`; choose other special tokens.")
            self.vocab = {str(token): index for index, token in enumerate(specials)}
            self.vocab.update({character: len(specials) + index for index, character in enumerate(alphabet)})
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.do_lower_case = do_lower_case
        super().__init__(
            alphabet=alphabet,
            do_lower_case=do_lower_case,
            pad_token=pad_token,
            unk_token=unk_token,
            eos_token=eos_token,
            bos_token=kwargs.pop("bos_token", eos_token),
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return {**self.vocab, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(text.lower() if self.do_lower_case else text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab[str(self.unk_token)])

    def _convert_id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, str(self.unk_token))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.vocab, handle, ensure_ascii=False, indent=1)
        return (path,)


__all__ = ["TEXT8_ALPHABET", "CharTokenizer"]
