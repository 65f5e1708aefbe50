"""nhb.bench: NAS-HPO-Bench-II table store, official data files, builder, query API."""

from nhb.bench.official import (
    class_hashes,
    export_official,
    import_official,
    load_pickle,
    official_columns,
    official_dicts,
)
from nhb.bench.table import (
    AVG_ACC_200,
    FORMAT_VERSION,
    METRICS,
    JaxTable,
    Table,
    TableError,
    load_table,
    make_meta,
    random_table,
    read_header,
    save_table,
)

__all__ = [
    "AVG_ACC_200",
    "FORMAT_VERSION",
    "METRICS",
    "JaxTable",
    "Table",
    "TableError",
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
]
