"""Loading that says which file is broken: a truncated or corrupted safetensors file is named in the error.

Linked into every model folder (like `gaam_layer.py`), so a saved folder carries it for `trust_remote_code=True`.
"""

from safetensors import SafetensorError


class ReadableWeightsMixin:
    """`from_pretrained` that turns safetensors' bare header error into one naming the checkpoint and the remedy."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The weights in {str(pretrained_model_name_or_path)!r} are not a readable safetensors file ({error}): "
                "the file is truncated or corrupted. Download or save the checkpoint again."
            ) from error
