"""nhb.bench: NAS-HPO-Bench-II table store, official data files, builder, query API."""

from nhb.bench.fake import random_table
from nhb.bench.official import (
    check_exportable,
    class_hashes,
    export_official,
    import_official,
    load_pickle,
    official_columns,
    official_dicts,
)
from nhb.bench.subspace import SearchSpace
from nhb.bench.table import (
    AVG_ACC_200,
    FORMAT_VERSION,
    METRICS,
    TABLE_FILE,
    TABLE_HELP,
    JaxTable,
    Table,
    TableError,
    load_table,
    make_meta,
    read_header,
    save_table,
    table_path,
)

__all__ = [
    "AVG_ACC_200",
    "FORMAT_VERSION",
    "METRICS",
    "TABLE_FILE",
    "TABLE_HELP",
    "JaxTable",
    "SearchSpace",
    "Table",
    "TableError",
    "check_exportable",
    "class_hashes",
    "export_official",
    "import_official",
    "load_pickle",
    "load_table",
    "make_meta",
    "official_columns",
    "official_dicts",
    "random_table",
    "read_header",
    "save_table",
    "table_path",
]

# The 200-epoch surrogate (issue #6).
from nhb.bench.surrogate import (
    Surrogate,
    SurrogateConfig,
    SurrogateError,
)
from nhb.bench.surrogate import fit as fit_surrogate
from nhb.bench.surrogate_cv import (
    cells_200ep,
    cross_validate,
    targets_from_table,
)

__all__ += [
    "Surrogate",
    "SurrogateConfig",
    "SurrogateError",
    "cells_200ep",
    "cross_validate",
    "fit_surrogate",
    "targets_from_table",
]

# The query API (issue #5).
from nhb.bench.api import Benchmark, QueryResult  # noqa: E402

__all__ += ["Benchmark", "QueryResult"]

# The table builder (issue #4).
from nhb.bench.build import (  # noqa: E402
    PRESETS,
    Preset,
    PresetMismatchError,
    get_preset,
    plan_shards,
)
from nhb.bench.build import build as build_table  # noqa: E402 - `build` names the module
from nhb.bench.build import plan as build_plan  # noqa: E402

__all__ += [
    "PRESETS",
    "Preset",
    "PresetMismatchError",
    "build_plan",
    "build_table",
    "get_preset",
    "plan_shards",
]
