"""The shared pytree config encoding (docs/protocol.md §2).

`nhb.space.nhb2` is the NAS-HPO-Bench-II joint space; `nhb.space.cells` its cell analysis
(compressed graphs, the 1011 equivalence classes, architecture groups).
"""

from nhb.space import cells, nhb2
from nhb.space.nhb2 import (
    BATCH_SIZES,
    LRS,
    SEEDS,
    SPACE,
    Config,
    NHB2Space,
)

__all__ = ["BATCH_SIZES", "LRS", "SEEDS", "SPACE", "Config", "NHB2Space", "cells", "nhb2"]
