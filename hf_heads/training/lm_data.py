"""Language-model data: a text corpus from the Hub, local files or the embedded BBC News, packed into blocks."""

import re

from datasets import Dataset, DatasetDict

from .data import bbc_news_splits, check_texts, load_source, select_columns


def load_text_corpus(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_files: dict[str, str] | None = None,
    text_column: str = "text",
    encoding: str = "utf-8",
) -> DatasetDict:
    """
    A `DatasetDict` with "train" (and "validation" when the source has one), holding `text_column` only, without
    empty texts.

    Sources: "bbc_news" (embedded; the *training* split of its fixed train/test split, so an LM pretrained here never
    reads the articles a classifier made from it is tested on), a Hub dataset, or local `data_files` {split: path}
    (`.txt` files give one row per line, which suits text8's single line too).
    """
    embedded = {"bbc_news": lambda: DatasetDict({"train": bbc_news_splits()["train"]})}
    splits = load_source(dataset_name, dataset_config_name, data_files, embedded, encoding)
    splits = DatasetDict({name: splits[name] for name in ("train", "validation") if name in splits})
    splits = select_columns(splits, [text_column], data_files, {text_column: "text_column"})
    splits = check_texts(splits, text_column, data_files)
    kept = {}
    for name, split in splits.items():
        split = split.filter(lambda row: bool(row[text_column].strip()))
        if len(split) == 0:
            raise ValueError(f"The {name} split holds no text.")
        kept[name] = split
    return DatasetDict(kept)


def normalize_to_alphabet(text: str, alphabet: str) -> str:
    """text8's cleaning: lower case, every character outside `alphabet` becomes a space, runs of spaces collapse."""
    kept = "".join(character if character in alphabet else " " for character in text.lower())
    return re.sub(" +", " ", kept).strip()


def pack_into_blocks(tokenized: Dataset, block_size: int, eos_token_id: int | None = None) -> Dataset:
    """
    Concatenate the `input_ids` of every row (separated by `eos_token_id` when given) and cut them into blocks of
    `block_size` tokens, dropping the incomplete tail, as `transformers`' `run_clm.py` does.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"`block_size` must be an integer >= 2, got {block_size!r}.")

    def pack(rows):
        stream = []
        for ids in rows["input_ids"]:
            stream.extend(ids)
            if eos_token_id is not None:
                stream.append(eos_token_id)
        usable = len(stream) // block_size * block_size
        blocks = [stream[start : start + block_size] for start in range(0, usable, block_size)]
        return {"input_ids": blocks, "labels": [list(block) for block in blocks]}

    return tokenized.map(
        pack, batched=True, batch_size=1000, remove_columns=tokenized.column_names, desc="Packing into blocks"
    )


def hold_out_tail(blocks: Dataset, percentage: float) -> DatasetDict:
    """The last `percentage`% of the blocks as "validation" (contiguous, as text8's standard split); the rest train."""
    if not 0 < percentage < 100:
        raise ValueError(f"`validation_split_percentage` must be in (0, 100), got {percentage!r}.")
    held = max(1, round(len(blocks) * percentage / 100))
    if held >= len(blocks):
        raise ValueError(
            f"{len(blocks)} block(s) of text cannot be split into training and validation; give more text or a "
            "smaller `--block_size`."
        )
    return DatasetDict({
        "train": blocks.select(range(len(blocks) - held)),
        "validation": blocks.select(range(len(blocks) - held, len(blocks))),
    })
