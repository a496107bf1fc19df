"""Weight-initialisation schemes for a model's new parameters (those not loaded from a checkpoint)."""

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .errors import RecipeError


WEIGHT_INIT_SCHEMES = ("default", "xavier_uniform", "xavier_normal", "kaiming_normal", "orthogonal")


def initialize_new_weights(model: nn.Module, scheme: str, new_parameters: set[str] | None = None) -> list[str]:
    """
    Re-initialise the weight matrices of `model`'s linear layers with `scheme`, biases to zero.

    `new_parameters` names the parameters that were not loaded from a checkpoint (`None`: all of them, a model
    built from its config); loaded weights are never touched. `"default"` keeps the model's own `_init_weights`
    (GPT-2: normal with `initializer_range`). Embeddings, norms and GAAM parameters keep their own initialisation:
    the schemes are defined for weight matrices. Returns the names of the re-initialised parameters.
    """
    if scheme not in WEIGHT_INIT_SCHEMES:
        raise RecipeError(f"`weight_init`={scheme!r} is not supported; accepted: {', '.join(WEIGHT_INIT_SCHEMES)}.")
    if scheme == "default":
        return []
    initializer = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming_normal": lambda weight: nn.init.kaiming_normal_(weight, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }[scheme]
    embeddings = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    changed = []
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if not isinstance(module, (nn.Linear, Conv1D)):
                continue
            prefix = f"{module_name}." if module_name else ""
            if new_parameters is not None and f"{prefix}weight" not in new_parameters:
                continue
            if module.weight.data_ptr() in embeddings:
                continue  # an LM head tied to the input embeddings is an embedding
            # GPT-2's Conv1D stores (in, out); torch's fan-in convention is (out, in).
            initializer(module.weight.T if isinstance(module, Conv1D) else module.weight)
            changed.append(f"{prefix}weight")
            if module.bias is not None:
                module.bias.zero_()
                changed.append(f"{prefix}bias")
    return changed
