r"""The authors' query pattern: official `nashpobench2api` client vs nhb's drop-in facade.

Both serve the same data: the full 1011-class synthetic table (`random_table(0)`, 3 seeds,
with `avg_acc_200`) exported with `export_official` for the client, and the same `Table` for
`nhb.bench.facade.NASHPOBench2API`. Each pattern is one Python loop as the reference scripts
write it (a random search: `key = api.get_random_key(); acc, cost = api.query_by_key(**key)`,
then `api.get_results()`), run with the same `random` seed on both APIs; the log lists and the
results are checked to be identical, then the best of `--repeats` wall times is compared.

Patterns: `random_search` (12-epoch valid, the README's loop), `partial` (random iepoch
1..12, as successive halving / Hyperband query), `test_mode` (mode='test'), `epoch200`
(`epoch=200`, not logged), `by_index` (`query_by_index` of random indices) and
`random_search_verbose` (verbose=True into a logger without output: the per-query DEBUG line
is formatted). Setup (client: unpickling; facade: from the Table and from a `.nhb` file) is
reported too. Writes `benchmarks/results/facade_speed.json`.

    python benchmarks/facade_speed.py [--queries=20000] [--repeats=3] [--official_dir=DIR]
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import random
import tempfile
import time
from collections.abc import Callable

from provenance import write_result

from nhb import bench
from nhb.bench.facade import NASHPOBench2API

RESULTS = pathlib.Path(__file__).parent / "results"
FILES = ("bench12.pkl", "cellinfo.pkl", "avgaccs200.pkl")


def _quiet(name: str) -> logging.Logger:
    logger = logging.getLogger(f"nhb.facade_speed.{name}")
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    return logger


def patterns(n: int, seed: int = 0) -> dict[str, Callable]:
    """name -> loop(api) -> its results; the draws depend on `seed` only, not on the API."""
    draw = random.Random(seed + 1)
    iepochs = [draw.randint(1, 12) for _ in range(n)]
    indices = [(draw.randrange(4096), draw.randrange(8), draw.randrange(6)) for _ in range(n)]

    def random_search(api, **kwargs) -> dict:
        random.seed(seed)
        for _ in range(n):
            key = api.get_random_key()
            _acc, _cost = api.query_by_key(**key, **kwargs)
        return api.get_results()

    def partial(api) -> dict:
        random.seed(seed)
        for e in iepochs:
            key = api.get_random_key()
            _acc, _cost = api.query_by_key(**key, iepoch=e)
        return api.get_results()

    def epoch200(api) -> list:
        random.seed(seed)
        return [api.query_by_key(**api.get_random_key(), epoch=200)[0] for _ in range(n)]

    def by_index(api) -> dict:
        for c, lr, bs in indices:
            _acc, _cost = api.query_by_index(c, lr, bs)
        return api.get_results()

    return dict(random_search=random_search, partial=partial,
                test_mode=lambda api: random_search(api, mode="test"),
                epoch200=epoch200, by_index=by_index,
                random_search_verbose=random_search)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    """Measures both APIs on every pattern and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--official_dir", default=None,
                    help="where to export the pickles (reused if present; default a temp dir)")
    args = ap.parse_args()
    import nashpobench2api

    tmp = tempfile.TemporaryDirectory(prefix="nhb_facade_speed_")
    folder = pathlib.Path(args.official_dir or tmp.name)
    table = bench.random_table(0)
    if not all((folder / f).is_file() for f in FILES):
        bench.export_official(table, folder)
    table_file = bench.save_table(table, pathlib.Path(tmp.name) / "random0.nhb")
    setup = {}
    setup["client_s"], client = timed(lambda: nashpobench2api.NASHPOBench2API(
        str(folder), logger=_quiet("client"), verbose=False))
    setup["facade_from_table_s"], facade = timed(lambda: NASHPOBench2API(
        table, logger=_quiet("facade"), verbose=False))
    setup["facade_from_file_s"], _ = timed(lambda: NASHPOBench2API(
        table_file, logger=_quiet("facade_file"), verbose=False))

    results = {}
    for name, loop in patterns(args.queries).items():
        best = {}
        outs = {}
        for label, api in (("official", client), ("facade", facade)):
            api.reset_logdata(verbose=name.endswith("verbose"))
            times = []
            for _ in range(args.repeats):
                api.reset_logdata()
                t, outs[label] = timed(lambda api=api, loop=loop: loop(api))
                times.append(t)
            best[label] = min(times)
        if repr(outs["official"]) != repr(outs["facade"]):  # exact values and types
            raise AssertionError(f"{name}: the facade's results differ from the client's")
        ratio = best["official"] / best["facade"]
        results[name] = dict(
            official_s=best["official"], facade_s=best["facade"], speedup=ratio,
            official_us_per_query=1e6 * best["official"] / args.queries,
            facade_us_per_query=1e6 * best["facade"] / args.queries)
        print(f"{name:<22} official {results[name]['official_us_per_query']:7.2f} us/query   "
              f"facade {results[name]['facade_us_per_query']:6.2f} us/query   "
              f"speedup {ratio:5.1f}x   (identical results)")
    print("setup: " + ", ".join(f"{k} {v:.2f}" for k, v in setup.items()))
    write_result(RESULTS / "facade_speed.json", dict(
        name="facade_speed", table="random_table(0): 1011 classes, 8 lrs, 6 batch sizes, "
        "3 seeds", queries=args.queries, repeats=args.repeats, patterns=results,
        setup=setup, identical_results=True))
    tmp.cleanup()


if __name__ == "__main__":
    main()
