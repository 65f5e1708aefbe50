"""Tests for nhb.nap2.predictor: losses, training, folds and the file format."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.nap2 import predictor as P

L = 8  # max_layers in these tests (the real data uses 65)


def _maps(seed: int, n: int, k: int):
    """Structured maps: run scale a_n times a fixed layer pattern, drifting over snapshots."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    pattern = rng.normal(size=(L, 100, 12)) * np.exp(rng.normal(size=(1, 1, 12)) * 2)
    drift = np.linspace(1.0, 2.0, k)
    x = a[:, None, None, None, None] * drift[None, :, None, None, None] * pattern
    x = x + 0.05 * rng.normal(size=x.shape)
    n_layers = rng.integers(2, L + 1, n)
    x = x * (np.arange(L)[None, None, :, None, None] < n_layers[:, None, None, None, None])
    return x.astype(np.float32), n_layers, a


def test_masked_mse_and_autoencoder_loss_ignore_padded_layers():
    cfg = P.PredictorConfig.quick(max_layers=L)
    rng = np.random.default_rng(0)
    recon = rng.normal(size=(2, L, 100, 12)).astype(np.float32)
    target = np.zeros_like(recon)
    n_layers = np.array([3, 1])
    sse, count = jax.jit(P.masked_mse)(recon, target, n_layers)
    want = (recon[0, :3] ** 2).sum() + (recon[1, :1] ** 2).sum()
    assert float(sse) == pytest.approx(want, rel=1e-5) and float(count) == 4 * 100 * 12

    maps = (rng.normal(size=(4, L, 100, 12)) * 10).astype(np.float32)
    n_layers = np.array([3, L, 5, 1])
    variables = P._autoencoder(cfg).init(jax.random.key(0), jnp.asarray(maps), False)
    noisy = maps.copy()
    pad = np.arange(L)[None, :] >= n_layers[:, None]
    noisy[pad] = rng.normal(size=noisy[pad].shape) * 1e6
    loss = jax.jit(P.autoencoder_loss, static_argnums=(3, 4))
    for train in (False, True):
        (l1, s1), (l2, s2) = loss(variables, maps, n_layers, cfg, train), loss(
            variables, noisy, n_layers, cfg, train)
        assert float(l1) == pytest.approx(float(l2), rel=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s1, s2)
    changed = maps.copy()
    changed[0, 2] += 5.0  # a real layer: the loss must see it
    assert abs(float(loss(variables, changed, n_layers, cfg, False)[0]) - float(l1)) > 1e-4


def test_fit_autoencoder_learns_and_returns_best_epoch():
    maps, n_layers, _ = _maps(0, 64, 3)
    train, valid = np.arange(48), np.arange(48, 64)
    # patience 1: stop after the first epoch without improvement
    cfg = P.PredictorConfig.quick(max_layers=L, ae_epochs=30, ae_patience=1,
                                  ae_learning_rate=1e-2)
    variables, hist = P.fit_autoencoder(jax.random.key(0), maps, n_layers, train, valid, cfg)
    assert hist["best_valid_loss"] < 0.3 * hist["initial_valid_loss"]
    assert hist["best_epoch"] == int(np.argmin(hist["valid_loss"]))
    assert hist["epochs"] == len(hist["train_loss"]) == hist["best_epoch"] + 2 < 30
    # the returned variables are the best epoch's, not the last epoch's
    assert hist["valid_loss"][-1] > hist["best_valid_loss"]
    got = P.evaluate_autoencoder(variables, maps, n_layers, valid, cfg)
    assert got == pytest.approx(hist["best_valid_loss"], rel=1e-6)
    emb = P.embed(variables, maps, n_layers, cfg, batch_size=7)  # 192 maps: a padded batch
    assert emb.shape == (64, 3, cfg.ae_embedding) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[[20]], P.embed(variables, maps, n_layers, cfg, idx=[20]),
                               rtol=1e-5, atol=1e-6)


def test_prefix_positions_and_l1():
    np.testing.assert_array_equal(P.prefix_positions(30, range(1, 11)), [*range(10), 29])
    np.testing.assert_array_equal(P.prefix_positions(12, range(1, 11)), [*range(10), 11])
    np.testing.assert_array_equal(P.prefix_positions(5, range(1, 11)), range(5))
    np.testing.assert_array_equal(P.prefix_positions(12, (1, 3)), [0, 2, 11])
    targets = jnp.array([0.5, 0.2])
    err = jnp.arange(24, dtype=jnp.float32).reshape(2, 12) / 100  # distinct error per position
    preds = targets[:, None] + err
    pos = jnp.asarray(P.prefix_positions(12, range(1, 11)))
    got = jax.jit(P.prefix_l1)(preds, targets, pos)
    want = np.mean([np.mean(np.asarray(err)[b, [*range(10), 11]]) for b in range(2)])
    assert float(got) == pytest.approx(want, rel=1e-5)
    got_w = jax.jit(P.prefix_l1)(preds, targets, pos, jnp.array([1.0, 0.0]))
    assert float(got_w) == pytest.approx(np.mean(np.asarray(err)[0, [*range(10), 11]]), rel=1e-5)


def test_fit_lstm_learns_embedding_function():
    rng = np.random.default_rng(1)
    n, k, e = 160, 12, 4
    a = rng.normal(size=n) * 1.5
    emb_w = rng.normal(size=(n, k, e)).astype(np.float32)
    emb_w[:, :, 0] = a[:, None] + 0.1 * rng.normal(size=(n, k))
    emb_g = rng.normal(size=(n, k, e)).astype(np.float32)
    targets = 1 / (1 + np.exp(-emb_w[:, :, 0].mean(1)))
    train, valid = np.arange(120), np.arange(120, 160)
    cfg = P.PredictorConfig.quick(lstm_epochs=40, lstm_patience=40, lstm_learning_rate=1e-2)
    params, hist = P.fit_lstm(jax.random.key(0), emb_w, emb_g, targets, train, valid, cfg)
    assert hist["positions"] == [*range(10), 11]
    model = P.AccuracyLSTM(cfg.lstm_hidden)
    x = np.concatenate([emb_w, emb_g], -1)[valid]
    preds = np.asarray(jax.jit(model.apply)(params, x))
    # the recorded best valid loss is the prefix L1 (positions 0..9 and 11) of the returned model
    want = np.mean(np.abs(preds[:, [*range(10), 11]] - targets[valid, None]))
    assert hist["best_valid_loss"] == pytest.approx(want, rel=1e-5)
    const = np.mean(np.abs(targets[valid] - np.median(targets[train])))
    assert np.mean(np.abs(preds[:, -1] - targets[valid])) < 0.15 * const
    assert hist["best_valid_loss"] < 0.15 * const


def test_cv_folds_and_split():
    rng = np.random.default_rng(2)
    groups = np.repeat(rng.permutation(40) + 100, rng.integers(1, 6, 40))
    folds = P.cv_folds(groups, 4, seed=3)
    assert set(folds) == {0, 1, 2, 3}
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 5  # greedy: within the largest group size
    np.testing.assert_array_equal(folds, P.cv_folds(groups, 4, seed=3))
    assert any(not np.array_equal(folds, P.cv_folds(groups, 4, seed=s)) for s in (4, 5))
    with pytest.raises(ValueError, match="groups"):
        P.cv_folds(np.array([0, 0, 1, 2]), 4)
    tr, va = P.split_train_valid(groups, folds != 0, 0.25, seed=0)
    assert not set(groups[tr]) & set(groups[va]) and len(va) > 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.nonzero(folds != 0)[0])
    assert abs(len(va) / (len(tr) + len(va)) - 0.25) < 0.1


def test_save_load_roundtrip_and_errors(tmp_path):
    w, n_layers, a = _maps(3, 12, 4)
    g = (w * 0.01)[:, ::-1].copy()
    targets = 1 / (1 + np.exp(-a))
    cfg = P.PredictorConfig.quick(max_layers=L, ae_epochs=2, lstm_epochs=3)
    pred = P.fit_predictor(jax.random.key(0), w, g, n_layers, targets, np.arange(8),
                           np.arange(8, 12), cfg)
    p = pred.predict(w, g, n_layers)
    assert p.shape == (12, 4) and p.dtype == np.float32 and np.all((p > 0) & (p < 1))
    path = P.save_predictor(tmp_path / "sub" / "nap2.predictor", pred)
    back = P.load_predictor(path)
    np.testing.assert_array_equal(back.predict(w, g, n_layers), p)
    assert back.config == cfg and back.meta["history"]["lstm"]["positions"] == [0, 1, 2, 3]
    assert back.meta["code_version"]

    with pytest.raises(FileNotFoundError, match=r"missing\.predictor"):
        P.load_predictor(tmp_path / "missing.predictor")
    (tmp_path / "garbage").write_bytes(b"hello world, not a predictor")
    with pytest.raises(ValueError, match="not an nhb NAP2 predictor"):
        P.load_predictor(tmp_path / "garbage")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[8:16])
    header = json.loads(raw[16:16 + n])
    header["format_version"] = 99
    head = json.dumps(header).encode()
    (tmp_path / "v99").write_bytes(raw[:8] + struct.pack("<Q", len(head)) + head + raw[16 + n:])
    with pytest.raises(ValueError, match="format_version 99"):
        P.load_predictor(tmp_path / "v99")
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        P.load_predictor(tmp_path / "cut")
