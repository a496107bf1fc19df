"""LoRA for `headed` and `gaam_gpt2` models with `peft`: adapters on the backbone's attention, new parts trained in full.

A new head (and GAAM, which a pretrained backbone never saw) must train in full and be saved with the adapter, or
the adapter reloads onto a randomly initialised head. `lora_config_for` names them in `modules_to_save`.
"""

from peft import LoraConfig
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from .models.gaam_gpt2.modeling_gaam_gpt2 import GaamGPT2PreTrainedModel
from .models.headed.modeling_headed import HeadedPreTrainedModel


# Task heads and GAAM parts, by module name, that a LoRA run trains in full and saves with the adapter.
HEAD_MODULES = ("head", "classifier", "score", "qa_outputs")
GAAM_MODULES = ("gaam", "gaam_gate")


def lora_config_for(model, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, target_modules=None) -> LoraConfig:
    """
    A `peft.LoraConfig` for `model`: LoRA on the backbone's attention projections (peft's defaults for the backbone's
    architecture unless `target_modules` is given); the task head and any GAAM layers in `modules_to_save`.
    """
    if isinstance(model, HeadedPreTrainedModel):
        backbone_type = model.config.backbone_config.model_type
    elif isinstance(model, GaamGPT2PreTrainedModel):
        backbone_type = "gpt2"
    else:
        raise TypeError(
            f"`model` must be a `headed` or `gaam_gpt2` model, got {type(model).__name__}; for other models build a "
            "`peft.LoraConfig` directly."
        )
    if target_modules is None:
        if backbone_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
            raise ValueError(
                f"peft has no default LoRA target modules for backbone type {backbone_type!r}; pass `target_modules` "
                "(names of the backbone's attention projections)."
            )
        target_modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[backbone_type]
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    # A `headed` model's GAAM lives inside its head, which is saved whole (naming it twice would wrap it twice).
    new_parts = HEAD_MODULES if isinstance(model, HeadedPreTrainedModel) else HEAD_MODULES + GAAM_MODULES
    modules_to_save = [name for name in new_parts if name in present]
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        modules_to_save=modules_to_save,
        # GPT-2's attention projections are `Conv1D`, whose weight is stored transposed.
        fan_in_fan_out=backbone_type == "gpt2",
    )


__all__ = ["lora_config_for"]
