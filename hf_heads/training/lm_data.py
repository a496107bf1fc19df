"""Language-model data: a text corpus from the Hub, local files or the embedded BBC News, packed into blocks."""

import re
from pathlib import Path

from datasets import Dataset, DatasetDict

from .data import bbc_news_splits, check_texts, describe_split, load_source, select_columns
from .errors import RecipeError


def load_text_corpus(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_files: dict[str, str] | None = None,
    text_column: str = "text",
    encoding: str = "utf-8",
    log=print,
) -> DatasetDict:
    """
    A `DatasetDict` with "train" (and "validation" when the source has one), holding `text_column` only, without
    empty texts: an empty line would add nothing but an end-of-text token between its neighbours. How many were left
    out is said through `log`.

    Sources: "bbc_news" (embedded; the *training* split of its fixed train/test split, so an LM pretrained here never
    reads the articles a classifier made from it is tested on), a Hub dataset, or local `data_files` {split: path}
    (`.txt` files give one row per line, which suits text8's single line too).
    """
    embedded = {"bbc_news": lambda: DatasetDict({"train": bbc_news_splits()["train"]})}
    splits = load_source(dataset_name, dataset_config_name, data_files, embedded, encoding)
    splits = DatasetDict({name: splits[name] for name in ("train", "validation") if name in splits})
    splits = select_columns(splits, [text_column], data_files, {text_column: "text_column"})
    splits = check_texts(splits, text_column, data_files)
    return drop_empty_texts(splits, text_column, data_files, "are empty or whitespace only", log)


def drop_empty_texts(splits: DatasetDict, text_column: str, data_files: dict | None, why: str, log=print):
    """`splits` without their empty or whitespace-only texts; how many rows of each went (and `why`) is logged."""
    kept = {}
    for name, split in splits.items():
        kept[name] = split.filter(lambda row: bool(row[text_column].strip()), desc="Leaving out empty texts")
        source = describe_split(name, data_files, starts_sentence=True)
        # A .txt file gives one row per line: say lines, the unit the user sees in the file.
        rows = "lines" if Path((data_files or {}).get(name, "")).suffix.lower() == ".txt" else "rows"
        if len(kept[name]) == 0:
            raise RecipeError(f"{source} holds no text: all {len(split):,} {rows} {why}.")
        dropped = len(split) - len(kept[name])
        if dropped:
            log(f"{source}: {dropped:,} of {len(split):,} {rows} {why} and are left out; the language model trains "
                f"on the other {len(kept[name]):,}.")
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
        raise RecipeError(f"`block_size` must be an integer >= 2, got {block_size!r}.")

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
        raise RecipeError(f"`validation_split_percentage` must be in (0, 100), got {percentage!r}.")
    held = max(1, round(len(blocks) * percentage / 100))
    if held >= len(blocks):
        raise RecipeError(
            f"{len(blocks)} block(s) of text cannot be split into training and validation; give more text or a "
            "smaller `--block_size`."
        )
    return DatasetDict({
        "train": blocks.select(range(len(blocks) - held)),
        "validation": blocks.select(range(len(blocks) - held, len(blocks))),
    })
