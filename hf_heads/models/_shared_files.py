"""Model folders carry the files they import (see DESIGN.md, "Hub folders"): inside the package, make those
same-folder imports resolve to the package's single copies, so there is one `GaussianAdaptiveAttention` class and one
`MismatchedWeightsError`, whichever model family raised it."""

import sys

from . import readable_weights
from ..gaam import layer as gaam_layer


def share_linked_files(package_name: str) -> None:
    """Make `<package_name>.gaam_layer` and `<package_name>.readable_weights` (links) the package's own modules."""
    sys.modules.setdefault(f"{package_name}.gaam_layer", gaam_layer)
    sys.modules.setdefault(f"{package_name}.readable_weights", readable_weights)
