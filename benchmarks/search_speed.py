r"""Search throughput: the paper's six methods x 500 runs x 20,000 s, nhb vs the reference loop.

nhb side: each method's runs as one vmapped jitted program (`nhb.search.run_many`), timed as
compile + first run ("cold", what `experiments/nhb2_search.py` pays) and a second run with
another key ("warm"). Reference side: the authors' `bench_algos` scripts' loops, transcribed
literally, driving the official `nashpobench2api` client one query at a time in Python on
the same data (a full 1011-class synthetic table exported with `export_official`):
random_search.py, rea.py, rs_then_rea.py as written; reinforce.py with its PyTorch policy
replaced by the same computation in NumPy (torch is not a dependency); bohb.py and
bohb_then_rea.py (hpbandster with a Pyro name server per run, as written) run in the Python
given by `--hpbandster_python` (an environment with hpbandster, ConfigSpace<0.7, numpy<2 and
nashpobench2api; hpbandster 0.7.4 fails with ConfigSpace 1.x / numpy 2), else they are
reported as not measured. Per-run result pickling is left out. The reference loops run
`--ref_runs` runs per method (`--bohb_ref_runs` for the hpbandster ones, which take seconds
per run) and are extrapolated linearly to `--runs`; the reference's mean final 12-epoch test
accuracy, queries and simulated time per run are reported beside ours as a sanity check.

    python benchmarks/search_speed.py [--runs=500] [--ref_runs=500] \
        [--hpbandster_python=/path/to/venv/bin/python --bohb_ref_runs=20]

Writes `benchmarks/results/search_speed.json` and prints the side-by-side ratios.
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import write_result
from query_speed import RESULTS, machine, official_setup

from nhb import search
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


def run_ours(name: str, b: Benchmark, runs: int, budget: float) -> dict:
    """Compile, first run and a second (warm) run of one method's vmapped program."""
    s = search.make(name)
    p = s.default_params()
    q = s.query_bound(b, budget)
    t0 = time.perf_counter()
    compiled = search.run_many.lower(jax.random.key(0), s, p, b, budget, runs, q).compile()
    t1 = time.perf_counter()
    tr = jax.block_until_ready(compiled(jax.random.key(0), p, b, budget))
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.key(1), p, b, budget))
    t3 = time.perf_counter()
    final = np.asarray(search.score(tr, 0.0).final_test)
    return dict(compile_s=t1 - t0, run_s=t2 - t1, warm_run_s=t3 - t2, cold_s=t2 - t0,
                queries=int(np.asarray(tr.n_queries).sum()), max_queries=q,
                truncated=int(np.asarray(tr.truncated).sum()),
                mean_final_test=float(np.nanmean(final)), std_final_test=float(np.nanstd(final)),
                mean_time=float(np.asarray(tr.time)[:, -1].mean()))


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
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    data_dir = args.official_dir or "/tmp/nhb_official_random_0"
    table, api = official_setup(0, data_dir)
    api.logger.handlers = [logging.StreamHandler(open(os.devnull, "w"))]
    b = Benchmark(table)
    rows = {}
    for name in methods:
        ours = run_ours(name, b, args.runs, args.budget)
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
                       mean_time=float(np.mean(ref["time"])))
            for k in ("final_test", "queries", "time"):
                del ref[k]
        rows[name] = dict(ours=ours, reference=ref)
        line = (f"{name:10s} nhb: compile {ours['compile_s']:5.2f} s + run {ours['run_s']:5.2f} s"
                f" (warm {ours['warm_run_s']:5.2f} s); {ours['queries'] / args.runs:5.1f} "
                f"queries, {ours['mean_time']:7.0f} s, test {ours['mean_final_test']:.2f}")
        if ref:
            line += (f" | reference ({ref['runs']} runs -> {args.runs}): "
                     f"{ref['extrapolated_s']:7.1f} s; {ref['mean_queries']:5.1f} queries, "
                     f"{ref['mean_time']:7.0f} s, test {ref['mean_final_test']:.2f} | ratio "
                     f"cold {ref['extrapolated_s'] / ours['cold_s']:6.1f}x, warm "
                     f"{ref['extrapolated_s'] / ours['warm_run_s']:7.1f}x")
        else:
            line += " | reference: needs --hpbandster_python, not measured"
        print(line, flush=True)
    total = {k: sum(r["ours"][k] for r in rows.values()) for k in ("cold_s", "warm_run_s",
                                                                   "compile_s")}
    res = dict(name="search_speed", runs=args.runs, budget=args.budget, methods=rows,
               total=total, hpbandster=importlib.util.find_spec("hpbandster") is not None,
               machine=machine())
    write_result(RESULTS / "search_speed.json", res)
    print(f"total nhb: cold (compile + run) {total['cold_s']:.1f} s, of which compile "
          f"{total['compile_s']:.1f} s; warm runs {total['warm_run_s']:.2f} s   "
          f"[load average {machine()['loadavg']}]")


if __name__ == "__main__":
    main()
