"""Tests for NAGO's queries and search loops (nhb.nago.evaluate / run / report / config).

The loops are checked with a synthetic evaluation (cheap); one real query trains a tiny
network through the engine and is checked against the closed-form parameter count and the
memory proxy.
"""

import json
import math

import jax
import numpy as np
import pytest

from nhb.models.hnag_count import param_count
from nhb.nago import evaluate as ev
from nhb.nago import graphs, memory, report, run
from nhb.nago.config import METHODS, NAGOConfig
from nhb.space import generators

QUICK = NAGOConfig.quick()


def fake_evaluate(config, space, vector, budget, data, num_classes=10):
    """A query whose accuracy peaks at unit vector 0.3 (better with budget); vectors with
    top_p (or stage1_p) below 0.2 fail as unsampleable."""
    x = space.validate(vector)
    u = np.asarray(space.to_unit(x))
    if x[2] < 0.2:
        return ev._failed(x, 2, budget, "failed", "top: 30 draws were all disconnected")
    acc = 90.0 - 100.0 * float(np.mean((u - 0.3) ** 2)) + 2.0 * budget
    return ev.Query(list(map(float, x)), 2, float(budget), "ok", acc, float(x.sum()), 1000, 4,
                    0.1, 0.0, "", {})


@pytest.fixture
def fake(monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[3])
        return fake_evaluate(*args, **kwargs)

    monkeypatch.setattr(run, "evaluate", counted)
    return calls


def test_config_validation_names_choices():
    with pytest.raises(ValueError, match="valid: hnag_bohb, rnag_bohb, hnag_mobo"):
        NAGOConfig(method="nago")
    with pytest.raises(ValueError, match="valid: thirds, released"):
        NAGOConfig(stage_ratios="halves")
    with pytest.raises(ValueError, match="valid: torch, activations, peak"):
        NAGOConfig(memory="bytes")
    assert NAGOConfig(method="rnag_mobo").family == "rnag"
    assert run.space_of(NAGOConfig(method="rnag_bohb", ranges="tiny")).ranges == "tiny"
    assert run.space_of(NAGOConfig(method="rnag_bohb", ranges="paper")).ranges == "nhb"
    assert run.space_of(NAGOConfig(method="rnag_bohb")).ranges == "cpu"
    assert {m.split("_")[1] for m in METHODS} == set(run.SEARCHES)


def test_bohb_loop_summary_table1_and_outputs(fake, tmp_path):
    s = run.run_nago(QUICK, tmp_path, progress=False)
    assert len(fake) == run.planned_queries(QUICK) == s["queries"] == 5
    assert sorted(fake) == [1.0, 1.0, 2.0, 2.0, 2.0]  # brackets [2@1, 1@2], [2@2]
    queries = json.loads((tmp_path / "queries.json").read_text())["queries"]
    ok = [q for q in queries if q["status"] == "ok"]
    top = max(q["budget"] for q in ok)
    want = max((q for q in ok if q["budget"] == top), key=lambda q: q["valid_acc"])
    assert s["best"]["vector"] == want["vector"] and s["best"]["valid_acc"] == want["valid_acc"]
    t1 = s["bnn_table1"]
    assert set(t1) == {"het", "hom"} and len(t1["het"]["nll_splits"]) == QUICK.table1_splits
    assert t1["het"]["nll"] == pytest.approx(np.median(t1["het"]["nll_splits"]))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["method"] == "hnag_bohb" and saved["queries"] == 5
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_resume_never_retrains_a_finished_query(fake, tmp_path, monkeypatch):
    cfg = NAGOConfig.quick(method="hnag_rs", rs_queries=4)
    real = run.evaluate
    n = {"left": 2}

    def dies(*args, **kwargs):
        if n["left"] == 0:
            raise KeyboardInterrupt
        n["left"] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "evaluate", dies)
    with pytest.raises(KeyboardInterrupt):
        run.run_nago(cfg, tmp_path, progress=False)
    assert len(fake) == 2
    monkeypatch.setattr(run, "evaluate", real)
    s = run.run_nago(cfg, tmp_path, progress=False)
    assert len(fake) == 4 and s["queries"] == 4  # only the 2 missing ones were trained
    run.run_nago(cfg, tmp_path, progress=False)
    assert len(fake) == 4
    other = NAGOConfig.quick(method="hnag_rs", rs_queries=4, learning_rate=0.05)
    run.run_nago(other, tmp_path, progress=False)  # other settings: the log is not reused
    assert len(fake) == 8
    mem = NAGOConfig.quick(method="hnag_rs", rs_queries=4, memory="activations")
    run.run_nago(mem, tmp_path, progress=False)  # another memory measure: queried again
    assert len(fake) == 12


def test_mobo_loop_proposes_new_points_and_skips_failures(fake, tmp_path):
    cfg = NAGOConfig.quick(method="hnag_mobo", mobo_init=6, mobo_batch_size=3,
                           bnn_burn_in=100, bnn_samples=20, bnn_keep_every=2)
    s = run.run_nago(cfg, tmp_path, progress=False)
    assert s["queries"] == len(fake) == 9 and set(fake) == {cfg.mobo_budget}
    queries = json.loads((tmp_path / "queries.json").read_text())["queries"]
    vecs = [tuple(q["vector"]) for q in queries]
    assert len(set(vecs)) == 9  # the batch avoids evaluated points and repeats
    sp = run.space_of(cfg)
    for v in vecs[6:]:
        sp.validate(v)
    y = run.objectives(queries)
    failed = [q["status"] == "failed" for q in queries]
    assert np.isnan(y[failed]).all() and np.isfinite(y[~np.array(failed)]).all()
    front = s["pareto"]
    assert front == sorted(front, key=lambda p: (p[1], p[0]))
    errs = [p[0] for p in front]
    assert errs == sorted(errs, reverse=True)  # more memory only when the error is lower


def test_report_pareto_and_best_on_hand_cases():
    def q(v, acc, mem, budget=1.0, status="ok"):
        return dict(vector=[v], valid_acc=acc, memory_mb=mem, budget=budget, status=status,
                    params=1)

    queries = [q(0, 80, 5), q(1, 85, 6), q(2, 70, 7), q(3, 90, 9), q(0, 95, 5, budget=2.0),
               q(4, float("nan"), float("nan"), status="failed")]
    assert report.best(queries)["vector"] == [0] and report.best(queries)["budget"] == 2.0
    # vector 0 counts at its largest budget (95 %), which dominates everything but nothing
    assert report.pareto(queries) == [(5.0, 5.0, [0])]
    assert report.pareto(queries[:4]) == [(20.0, 5.0, [0]), (15.0, 6.0, [1]), (10.0, 9.0, [3])]
    assert report.best([queries[-1]]) is None and report.pareto([queries[-1]]) == []


def test_unsampleable_generator_is_a_failed_record():
    space = generators.make("hnag")
    q = ev.evaluate(QUICK, space, (8, 5, 0.6, 10, 0.1, 3, 2, 0.5), 1.0, data=None)
    assert q.status == "failed" and q.reason.startswith("mid[") and math.isnan(q.valid_acc)
    assert q.loss == math.inf and ev.loss_of(q.to_dict()) == math.inf


def test_train_key_depends_on_vector_and_seed_only():
    a = ev.train_key(QUICK, [3, 2, 0.5])
    assert jax.random.key_data(a).tolist() == jax.random.key_data(
        ev.train_key(NAGOConfig.quick(max_train=10), [3, 2, 0.5])).tolist()
    assert jax.random.key_data(a).tolist() != jax.random.key_data(
        ev.train_key(QUICK, [3, 2, 0.6])).tolist()


def test_real_query_trains_a_tiny_network():
    cfg = NAGOConfig.quick(max_train=64, max_valid=32, batch_size=32)
    data, classes = run.load_data(cfg.dataset, cfg.max_train, cfg.max_valid)
    space = generators.make("hnag", "tiny")
    x = (3, 2, 0.5, 1, 0.5, 3, 2, 0.5)
    q = ev.evaluate(cfg, space, x, 1.0, data, classes)
    assert q.status == "ok" and 0.0 <= q.valid_acc <= 100.0
    assert q.valid_acc * 32 / 100 == pytest.approx(round(q.valid_acc * 32 / 100))
    h = graphs.sample(space, x, ev.base_seed_of(cfg))
    width = graphs.channel_multiplier(h, cfg.param_limit)
    assert q.width == width and q.params == param_count(h, width, classes, 32)
    assert q.memory_mb == memory.torch_memory_per_image_mb(h, width, classes, 32)
    assert q.graph["ops"] == h.num_ops and q.train_time > 0
    model = ev.fast_model(h, width, classes, 32)
    act = ev.memory_per_sample("activations", model, h, width, classes, 32, 32)
    assert act == pytest.approx(memory.activation_bytes_per_image(model) / ev.MB)
