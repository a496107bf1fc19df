"""Model folders carry the files they import (see DESIGN.md, "Hub folders"): inside the package, make those
same-folder imports resolve to the package's single copy, so there is one class of each (one
`GaussianAdaptiveAttention`, one `GaamGPT2Model` whether built alone or as a `headed` backbone)."""

import importlib
import sys


# Same-folder module name -> the package module that a model folder's link (`<name>.py`) points at.
SHARED_FILES = {
    "gaam_layer": "hf_heads.gaam.layer",
    "losses": "hf_heads.models.losses",
    "configuration_gaam_gpt2": "hf_heads.models.gaam_gpt2.configuration_gaam_gpt2",
    "modeling_gaam_gpt2": "hf_heads.models.gaam_gpt2.modeling_gaam_gpt2",
}


def share_files(package_name: str, names=("gaam_layer", "losses")) -> None:
    """Make `<package_name>.<name>` (a link in the model folder) the package's own module, for each name."""
    for name in names:
        if f"{package_name}.{name}" not in sys.modules:
            sys.modules[f"{package_name}.{name}"] = importlib.import_module(SHARED_FILES[name])


def share_gaam_layer(package_name: str) -> None:
    """Model folders that carry the GAAM op (and the shared losses) import the package's single copy."""
    share_files(package_name)
