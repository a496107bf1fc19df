"""Model folders carry the files they import (see DESIGN.md, "Hub folders"): inside the package, make those
same-folder imports resolve to the package's single copies, so there is one class of each (one
`GaussianAdaptiveAttention`, one `MismatchedWeightsError` whichever model family raised it, one `GaamGPT2Model`
whether built alone or as a `headed` backbone)."""

import importlib
import sys


# Same-folder module name -> the package module that a model folder's link (`<name>.py`) points at.
SHARED_FILES = {
    "gaam_layer": "hf_heads.gaam.layer",
    "losses": "hf_heads.models.losses",
    "readable_weights": "hf_heads.models.readable_weights",
    "configuration_gaam_gpt2": "hf_heads.models.gaam_gpt2.configuration_gaam_gpt2",
    "modeling_gaam_gpt2": "hf_heads.models.gaam_gpt2.modeling_gaam_gpt2",
}


def share_files(package_name: str, names=("gaam_layer", "losses", "readable_weights")) -> None:
    """Make `<package_name>.<name>` (a link in the model folder) the package's own module, for each name."""
    for name in names:
        if f"{package_name}.{name}" not in sys.modules:
            sys.modules[f"{package_name}.{name}"] = importlib.import_module(SHARED_FILES[name])


def share_linked_files(package_name: str) -> None:
    """The links every model folder has: the GAAM op, the shared losses and the weight-loading checks."""
    share_files(package_name)
