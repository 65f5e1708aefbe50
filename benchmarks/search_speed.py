r"""Search throughput: the paper's six methods x 500 runs x 20,000 s, nhb vs the reference loop.

nhb side: each method's runs as one jitted program (`nhb.search.run_many`), timed in a fresh
Python process per measurement (no in-process cache helps; the table is built and on device
before the clock starts, as the reference's client is loaded before its loop): "cold" = lowering
+ compiling + the first run, what `experiments/nhb2_search.py` pays per method, with an empty
persistent compilation cache ("cold"), then in another fresh process with the cache the first
one filled ("warm cache": lowering + loading + first run); "warm run" = a second run with
another key in the first process. Reference side: the authors' `bench_algos` scripts' loops,
transcribed literally, driving the official `nashpobench2api` client one query at a time in
Python on the same data (a full 1011-class synthetic table exported with `export_official`):
random_search.py, rea.py, rs_then_rea.py as written; reinforce.py with its PyTorch policy
replaced by the same computation in NumPy (torch is not a dependency); bohb.py and
bohb_then_rea.py (hpbandster with a Pyro name server per run, as written) run in the Python
given by `--hpbandster_python` (an environment with hpbandster, ConfigSpace<0.7, numpy<2 and
nashpobench2api; hpbandster 0.7.4 fails with ConfigSpace 1.x / numpy 2), else they are reported
as not measured. Per-run result pickling is left out. The reference loops run `--ref_runs` runs
per method (`--bohb_ref_runs` for the hpbandster ones, which take seconds per run) and are
extrapolated linearly to `--runs`; the reference's mean final 12-epoch test accuracy, queries
and simulated time per run are reported beside ours as a sanity check.

    python benchmarks/search_speed.py [--runs=500] [--ref_runs=500] \
        [--hpbandster_python=/path/to/venv/bin/python --bohb_ref_runs=20]

Writes `benchmarks/results/search_speed.json` and prints the side-by-side ratios per method
(reference seconds / ours) and for the six methods together (needs every reference, i.e.
`--hpbandster_python`).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import write_result
from query_speed import RESULTS, machine, official_setup

from nhb import bench, search
from nhb.bench.api import Benchmark

# ----------------------------------------------------------------------------- reference


def ref_rs(args, api):
    """random_search.py."""
    while api.get_total_cost() < args.time_budget:
        key = api.get_random_key()
        api.query_by_key(**key, epoch=12)
    return api.get_results(epoch="both")


def _mutate(key, api, edges_only=False):
    from nashpobench2api.utils import get_ith_op, set_ith_op

    new_key = copy.deepcopy(key)
    elements = [f"edge-{i}" for i in range(6)] + ([] if edges_only else ["lr", "batch_size"])
    e = random.choice(elements)
    if e.startswith("edge"):
        i = int(e[-1])
        cur = get_ith_op(key["cellcode"], i)
        new_key["cellcode"] = set_ith_op(key["cellcode"], i,
                                         random.choice([o for o in range(4) if o != cur]))
    elif e == "lr":
        new_key["lr"] = random.choice([v for v in api.lrs if v != key["lr"]])
    else:
        new_key["batch_size"] = random.choice([v for v in api.batch_sizes
                                               if v != key["batch_size"]])
    return new_key


def _rea(args, api, fixed=None):
    """rea.py / rea_nas.py (with `fixed` = (lr, batch_size))."""
    population = collections.deque()
    while len(population) < 10:
        key = api.get_random_key()
        if fixed:
            key["lr"], key["batch_size"] = fixed
        acc, _ = api.query_by_key(**key, epoch=12)
        population.append((key, acc))
    while api.get_total_cost() < args.time_budget:
        sample = [random.choice(list(population)) for _ in range(3)]
        parent = max(sample, key=lambda m: m[1])
        child = _mutate(parent[0], api, edges_only=fixed is not None)
        acc, _ = api.query_by_key(**child, epoch=12)
        population.append((child, acc))
        population.popleft()
    return api.get_results(epoch="both")


def ref_re(args, api):
    """rea.py."""
    return _rea(args, api)


def ref_rs_re(args, api):
    """rs_then_rea.py (random_search_hpo.do_hpo, then rea_nas.do_nas)."""
    cellcode = random.choice(api.cellcodes)
    while api.get_total_cost() < 5000:
        key = api.get_random_key()
        key["cellcode"] = cellcode
        api.query_by_key(**key, epoch=12)
    best = api.get_results(epoch="both")["best_key_trans"][-1]
    random.seed(args.rand_seed)
    return _rea(args, api, fixed=(best["lr"], best["batch_size"]))


def ref_reinforce(args, api):
    """reinforce.py with the torch policy/Adam written in NumPy (same computation)."""
    rng = np.random.default_rng(args.rand_seed)
    params = [1e-3 * rng.standard_normal((6, 4)), 1e-3 * rng.standard_normal((1, 8)),
              1e-3 * rng.standard_normal((1, 6))]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    num = den = 0.0
    step = 0
    while api.get_total_cost() < args.time_budget:
        probs = [np.exp(p - p.max(-1, keepdims=True)) for p in params]
        probs = [q / q.sum(-1, keepdims=True) for q in probs]
        acts = [np.array([rng.choice(q.shape[-1], p=row) for row in q]) for q in probs]
        code = "".join(str(a) + ("|" if i in (0, 2) else "") for i, a in enumerate(acts[0]))
        reward, _ = api.query_by_key(code, api.lrs[acts[1][0]], api.batch_sizes[acts[2][0]],
                                     epoch=12)
        num = 0.9 * num + 0.1 * reward
        den = 0.9 * den + 0.1
        adv = reward - num / den
        step += 1
        for k, (p, q, a) in enumerate(zip(params, probs, acts, strict=True)):
            g = (q - np.eye(q.shape[-1])[a]) * adv
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            p -= 0.01 * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
    return api.get_results(epoch="both")


REFERENCE = {"rs": ref_rs, "re": ref_re, "reinforce": ref_reinforce, "rs_re": ref_rs_re}
HPBANDSTER = ("bohb", "bohb_re")  # run by HPBANDSTER_DRIVER in --hpbandster_python

HPBANDSTER_DRIVER = r'''
import collections, copy, json, logging, random, sys, time
import numpy as np
import ConfigSpace
import hpbandster.core.nameserver as hpns
from hpbandster.core.worker import Worker
from hpbandster.optimizers.bohb import BOHB
from nashpobench2api import NASHPOBench2API
from nashpobench2api.utils import get_ith_op, set_ith_op

data_dir, method, runs, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
logging.basicConfig(level=logging.ERROR)
api = NASHPOBench2API(data_dir, verbose=False)
api.logger.handlers = [logging.StreamHandler(open("/dev/null", "w"))]

class MyWorker(Worker):  # bohb.py / bohb_hpo.py
    def __init__(self, *a, config2key, api=None, **k):
        super().__init__(*a, **k); self.config2key = config2key; self.api = api
    def compute(self, config, budget, **kwargs):
        key = self.config2key(config)
        acc, cost = self.api.query_by_key(**key, epoch=12, iepoch=int(budget))
        return {"loss": 100 - acc, "info": key}

def joint_key(c):
    code = "".join(str(c[str(i)]) + ("|" if i in (0, 2) else "") for i in range(6))
    return {"cellcode": code, "lr": c["lr"], "batch_size": c["batch_size"]}

def run_bohb(cs, config2key, n_iters, num_samples):
    NS = hpns.NameServer(run_id="0", host="localhost", port=0)
    host, port = NS.start()
    w = MyWorker(nameserver=host, nameserver_port=port, config2key=config2key, api=api,
                 run_id="0", id=0)
    w.run(background=True)
    b = BOHB(configspace=cs, run_id="0", eta=3, min_budget=1, max_budget=12, nameserver=host,
             nameserver_port=port, num_samples=num_samples, random_fraction=0.0,
             bandwidth_factor=3, ping_interval=10, min_bandwidth=0.3)
    b.run(n_iters, min_n_workers=1)
    b.shutdown(shutdown_workers=True)
    NS.shutdown()

def mutate(key):  # rea_nas.py
    new_key = copy.deepcopy(key)
    i = int(random.choice([f"edge-{i}" for i in range(6)])[-1])
    cur = get_ith_op(key["cellcode"], i)
    new_key["cellcode"] = set_ith_op(key["cellcode"], i,
                                     random.choice([o for o in range(4) if o != cur]))
    return new_key

def rea_nas(seed, lr, bs):
    random.seed(seed)
    population = collections.deque()
    while len(population) < 10:
        key = api.get_random_key(); key["lr"] = lr; key["batch_size"] = bs
        acc, _ = api.query_by_key(**key, epoch=12)
        population.append((key, acc))
    while api.get_total_cost() < budget:
        parent = max([random.choice(list(population)) for _ in range(3)], key=lambda m: m[1])
        child = mutate(parent[0])
        acc, _ = api.query_by_key(**child, epoch=12)
        population.append((child, acc)); population.popleft()

out = dict(final_test=[], queries=[], time=[])
t0 = time.perf_counter()
for i in range(runs):
    random.seed(i); np.random.seed(i)
    if method == "bohb":
        cs = ConfigSpace.ConfigurationSpace(i)
        for e in range(6):
            cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter(str(e), [0, 1, 2, 3]))
        cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter("lr", api.lrs))
        cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter("batch_size",
                                                                    api.batch_sizes))
        run_bohb(cs, joint_key, 40, 4)
    else:
        cellcode = random.choice(api.cellcodes)
        random.seed(i); np.random.seed(i)
        cs = ConfigSpace.ConfigurationSpace(i)
        cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter("cellcode", [cellcode]))
        cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter("lr", api.lrs))
        cs.add_hyperparameter(ConfigSpace.CategoricalHyperparameter("batch_size",
                                                                    api.batch_sizes))
        run_bohb(cs, lambda c: dict(c), 4, 5)
        best = api.get_results(epoch="both")["best_key_trans"][-1]
        rea_nas(i, best["lr"], best["batch_size"])
    r = api.get_results(epoch="both")
    out["final_test"].append(r["final_accs"][0])
    out["queries"].append(len(r["acc_trans"]))
    out["time"].append(r["total_cost_trans"][-1])
    api.reset_logdata()
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
'''


def run_hpbandster(name: str, python: str, data_dir: str, runs: int, budget: float) -> dict:
    """Runs the hpbandster reference of bohb / bohb_re in another Python; its JSON output."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(HPBANDSTER_DRIVER)
    res = subprocess.run([python, f.name, data_dir, name, str(runs), str(budget)],
                         capture_output=True, text=True, check=True)
    os.unlink(f.name)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_reference(name: str, api, runs: int, budget: float) -> dict:
    """`runs` runs of a reference loop here: seconds, final test accuracies, queries, time."""
    args = argparse.Namespace(time_budget=budget, rand_seed=0)
    out = dict(final_test=[], queries=[], time=[])
    t = time.perf_counter()
    for i in range(runs):
        random.seed(i)
        args.rand_seed = i
        r = REFERENCE[name](args, api)
        out["final_test"].append(r["final_accs"][0])
        out["queries"].append(len(r["acc_trans"]))
        out["time"].append(r["total_cost_trans"][-1])
        api.reset_logdata()
    out["seconds"] = time.perf_counter() - t
    return out


# ----------------------------------------------------------------------------- nhb


def _cache_hits() -> list[int]:
    """A counter of JAX's persistent-cache hits in this process."""
    hits = [0]

    def listen(event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits[0] += 1

    jax.monitoring.register_event_listener(listen)
    return hits


def worker(name: str, runs: int, budget: float, cache: str) -> dict:
    """One method in this (fresh) process: lower + compile (or load from the persistent cache
    `cache`, "none" for off), first run ("cold" = all three, what `experiments/nhb2_search.py`
    pays per method), then a second run with another key ("warm"). The table is built and
    on device before the clock starts, as the reference's client is loaded before its."""
    from nhb.search.study import use_compilation_cache

    b = Benchmark(bench.random_table(0))
    jax.block_until_ready(b.packed)
    cache_dir = use_compilation_cache(cache)
    hits = _cache_hits()
    s = search.make(name)
    p = s.default_params()
    q = s.query_bound(b, budget)
    t0 = time.perf_counter()
    lowered = search.run_many.lower(jax.random.key(0), s, p, b, budget, runs, q)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    tr = jax.block_until_ready(compiled(jax.random.key(0), p, b, budget))
    t3 = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.key(1), p, b, budget))
    t4 = time.perf_counter()
    final = np.asarray(search.score(tr, 0.0).final_test)
    return dict(lower_s=t1 - t0, compile_s=t2 - t1, run_s=t3 - t2, cold_s=t3 - t0,
                warm_run_s=t4 - t3, cache=cache_dir, cache_hit=hits[0] > 0,
                compiler_options=search.compiler_options(s),
                queries=int(np.asarray(tr.n_queries).sum()), max_queries=q,
                truncated=int(np.asarray(tr.truncated).sum()),
                mean_final_test=float(np.nanmean(final)), std_final_test=float(np.nanstd(final)),
                mean_time=float(np.asarray(tr.time)[:, -1].mean()))


def spawn_worker(name: str, runs: int, budget: float, cache: str) -> dict:
    """`worker` in a fresh Python process (no in-process caches); its dict, plus the
    process's wall time including imports and building the table (`process_s`)."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, f"--worker={name}", f"--runs={runs}",
                          f"--budget={budget}", f"--worker_cache={cache}"],
                         capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"worker {name} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def run_ours(name: str, runs: int, budget: float) -> dict:
    """Cold with an empty persistent cache, then cold again with the cache the first process
    filled (each in a fresh process)."""
    cache = tempfile.mkdtemp(prefix="nhb_search_speed_cache_")
    try:
        empty = spawn_worker(name, runs, budget, cache)
        warm = spawn_worker(name, runs, budget, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if empty["cache_hit"] or not warm["cache_hit"]:
        print(f"warning: {name}: cache hits {empty['cache_hit']} (empty cache), "
              f"{warm['cache_hit']} (warm cache)", flush=True)
    keep = ("lower_s", "compile_s", "run_s", "cold_s", "process_s", "cache_hit")
    return dict(empty_cache=empty, warm_cache={k: warm[k] for k in keep},
                cold_s=empty["cold_s"], cold_warm_cache_s=warm["cold_s"],
                warm_run_s=empty["warm_run_s"])


def main() -> None:
    """Measures both sides for each method and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--ref_runs", type=int, default=500)
    ap.add_argument("--budget", type=float, default=20000.0)
    ap.add_argument("--methods", default=",".join(search.PAPER_METHODS))
    ap.add_argument("--official_dir", default=None)
    ap.add_argument("--hpbandster_python", default=None)
    ap.add_argument("--bohb_ref_runs", type=int, default=20)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker_cache", default="none", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.runs, args.budget, args.worker_cache)))
        return
    methods = [m for m in args.methods.split(",") if m]
    data_dir = args.official_dir or "/tmp/nhb_official_random_0"
    _, api = official_setup(0, data_dir)
    api.logger.handlers = [logging.StreamHandler(open(os.devnull, "w"))]
    rows = {}
    for name in methods:
        ours = run_ours(name, args.runs, args.budget)
        ref = None
        if name in REFERENCE:
            ref = run_reference(name, api, args.ref_runs, args.budget)
        elif args.hpbandster_python:
            ref = run_hpbandster(name, args.hpbandster_python, data_dir, args.bohb_ref_runs,
                                 args.budget)
        if ref:
            n = len(ref["queries"])
            ref.update(runs=n, extrapolated_s=ref["seconds"] * args.runs / n,
                       mean_final_test=float(np.mean(ref["final_test"])),
                       mean_queries=float(np.mean(ref["queries"])),
                       mean_time=float(np.mean(ref["time"])),
                       implementation="hpbandster" if name in HPBANDSTER else "python")
            for k in ("final_test", "queries", "time"):
                del ref[k]
            ours["ratio_cold"] = ref["extrapolated_s"] / ours["cold_s"]
            ours["ratio_cold_warm_cache"] = ref["extrapolated_s"] / ours["cold_warm_cache_s"]
            ours["ratio_warm_run"] = ref["extrapolated_s"] / ours["warm_run_s"]
        rows[name] = dict(ours=ours, reference=ref)
        e = ours["empty_cache"]
        line = (f"{name:9s} nhb cold {ours['cold_s']:5.2f} s (lower {e['lower_s']:4.2f} + "
                f"compile {e['compile_s']:4.2f} + run {e['run_s']:4.2f}), warm cache "
                f"{ours['cold_warm_cache_s']:5.2f} s, warm run {ours['warm_run_s']:5.2f} s; "
                f"{e['queries'] / args.runs:5.1f} q, test {e['mean_final_test']:.2f}")
        if ref:
            line += (f" | ref ({ref['runs']} runs -> {args.runs}) {ref['extrapolated_s']:7.1f} s;"
                     f" {ref['mean_queries']:5.1f} q, test {ref['mean_final_test']:.2f} | "
                     f"ratio cold {ours['ratio_cold']:6.1f}x, warm cache "
                     f"{ours['ratio_cold_warm_cache']:6.1f}x, warm run "
                     f"{ours['ratio_warm_run']:7.1f}x")
        else:
            line += " | reference: needs --hpbandster_python, not measured"
        print(line, flush=True)
    total = {k: sum(r["ours"][k] for r in rows.values())
             for k in ("cold_s", "cold_warm_cache_s", "warm_run_s")}
    total["compile_s"] = sum(r["ours"]["empty_cache"]["lower_s"]
                             + r["ours"]["empty_cache"]["compile_s"] for r in rows.values())
    measured = [r for r in rows.values() if r["reference"]]
    if len(measured) == len(rows):
        ref_s = sum(r["reference"]["extrapolated_s"] for r in rows.values())
        total.update(reference_s=ref_s, ratio_cold=ref_s / total["cold_s"],
                     ratio_cold_warm_cache=ref_s / total["cold_warm_cache_s"])
    res = dict(name="search_speed", runs=args.runs, ref_runs=args.ref_runs,
               bohb_ref_runs=args.bohb_ref_runs if args.hpbandster_python else None,
               budget=args.budget, methods=rows, total=total,
               hpbandster=_hpbandster_version(args.hpbandster_python), machine=machine())
    write_result(RESULTS / "search_speed.json", res)
    line = (f"total nhb: cold {total['cold_s']:.1f} s (lower + compile {total['compile_s']:.1f}"
            f" s), with a warm cache {total['cold_warm_cache_s']:.1f} s; warm runs "
            f"{total['warm_run_s']:.2f} s")
    if "reference_s" in total:
        line += (f" | reference {total['reference_s']:.0f} s | ratio cold "
                 f"{total['ratio_cold']:.0f}x, warm cache {total['ratio_cold_warm_cache']:.0f}x")
    else:
        line += " | total ratio: needs every method's reference (--hpbandster_python)"
    print(f"{line}   [load average {machine()['loadavg']}]")


def _hpbandster_version(python: str | None) -> dict | None:
    """The hpbandster, ConfigSpace and numpy versions of `python` (None: not given)."""
    if not python:
        return None
    code = ("import json, importlib.metadata as m; print(json.dumps({k: m.version(k) for k in "
            "('hpbandster', 'ConfigSpace', 'numpy', 'statsmodels', 'nashpobench2api')}))")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return dict(python=python, **json.loads(res.stdout))


if __name__ == "__main__":
    main()
