"""Tokenizers as the recipes save them: a padding token, at least one token for any text, the run's length."""

from .errors import RecipeError


def ready_for_training(tokenizer):
    """
    A padding token (GPT-2's tokenizers have none; padding positions are masked, so the end-of-text token serves),
    and at least one token for every text: GPT-2's byte-level BPE turns "" into no tokens at all, which no model can
    classify. Such tokenizers start every text with their beginning-of-text token (GPT-2's `<|endoftext|>`, the
    separator it saw between documents in pretraining); the setting is saved with the tokenizer, so `pipeline` does
    the same.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer("")["input_ids"]:
        if tokenizer.bos_token is None:
            tokenizer.bos_token = tokenizer.eos_token
        if tokenizer.bos_token is None:
            raise RecipeError(
                f"The tokenizer ({type(tokenizer).__name__}) turns an empty text into no tokens and has neither a "
                "beginning- nor an end-of-text token to give it; add one (`tokenizer.add_special_tokens`)."
            )
        tokenizer.add_bos_token = True
    return tokenizer


def model_positions(model) -> int | None:
    config = getattr(model.config, "backbone_config", None) or model.config
    return getattr(config, "max_position_embeddings", None)


def fit_tokenizer_to_model(tokenizer, model, max_length: int, flag: str = "--max_length"):
    """`max_length` must fit the model's positions; the saved tokenizer truncates to it (`model_max_length`)."""
    positions = model_positions(model)
    if positions is not None and max_length > positions:
        raise RecipeError(
            f"`{flag}`={max_length} (given, or the recipe's default) exceeds the model's {positions} positions: pass "
            f"`{flag}` {positions} or less, or a model with more positions."
        )
    tokenizer.model_max_length = max_length
    return tokenizer
