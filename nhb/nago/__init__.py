"""nhb.nago: NAGO (Ru et al. 2020), network architecture generator optimisation.

* `graphs`: a generator vector (`nhb.space.generators`) -> the hierarchy of random graphs
  the authors' code samples (seeding, DAGs, stages, width from the parameter limit);
* `nhb.models.hnag`: the network of a hierarchy; `memory`: memory per sample;
* `evaluate`: one query (sample, build, train with nhb's protocol, measure); failures are
  records;
* `run.run_nago(config, output_dir)`: HNAG/RNAG with BOHB, MOBO or random search, resumable;
  `report`: best generator, error/memory Pareto fronts, the Table-1 BNN comparison.

Decisions and measurements: `docs/nago.md`.
"""

from nhb.nago.config import METHODS, NAGOConfig
from nhb.nago.evaluate import Query
from nhb.nago.run import run_nago

__all__ = ["METHODS", "NAGOConfig", "Query", "run_nago"]
