"""Loading errors that say what is wrong: a broken weights file is named, and shapes that do not fit are explained.

Linked into every model folder (like `gaam_layer.py`), so a saved folder carries it for `trust_remote_code=True`.
"""

from safetensors import SafetensorError


class MismatchedWeightsError(RuntimeError):
    """
    A checkpoint's tensors do not fit the model's shapes. A `RuntimeError`, as transformers raises for this, so code
    that catches transformers' error catches this one; its message names the checkpoint and the remedy.
    """


class ReadableWeightsMixin:
    """`from_pretrained` whose errors name the checkpoint and the remedy (safetensors' and transformers' do not)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            # transformers logged a report of the tensors whose shapes differ just before raising.
            raise MismatchedWeightsError(
                f"Checkpoint {str(pretrained_model_name_or_path)!r} has tensors whose shapes do not fit this "
                "configuration (the load report above lists them with both shapes), e.g. another `gaam_num_heads`, "
                "`num_labels` or vocabulary size. Load it with its own configuration, or pass "
                "`ignore_mismatched_sizes=True` to re-initialise those tensors."
            ) from error
        except SafetensorError as error:
            raise OSError(
                f"The weights in {str(pretrained_model_name_or_path)!r} are not a readable safetensors file ({error}): "
                "the file is truncated or corrupted. Download or save the checkpoint again."
            ) from error
