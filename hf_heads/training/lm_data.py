"""Language-model data: tokenised texts packed into fixed-size blocks."""

from datasets import Dataset


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

    return tokenized.map(pack, batched=True, batch_size=1000, remove_columns=tokenized.column_names)
