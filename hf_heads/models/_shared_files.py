"""Model folders carry the files they import (see DESIGN.md, "Hub folders"): inside the package, make those
same-folder imports resolve to the package's single copy, so there is one `GaussianAdaptiveAttention` class."""

import sys

from ..gaam import layer as gaam_layer


def share_gaam_layer(package_name: str) -> None:
    """Make `<package_name>.gaam_layer` (a link to `hf_heads/gaam/layer.py`) the module `hf_heads.gaam.layer`."""
    sys.modules.setdefault(f"{package_name}.gaam_layer", gaam_layer)
