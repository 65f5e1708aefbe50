"""ISTA-NAS sparse-coding architecture search state (one-stage ISTA as used by DHA), in jnp.

Reference: DHA `model/ista_sup_single.py` (see `shared/reference/dha.md` §3).

* Per cell type t and searched node i a fixed measurement matrix A ~ U[0,1) of shape
  [proj_dims, n_i] (`:49-55`, numpy `rand`) and a trained code b = 1e-3 * N(0, 1) of length
  proj_dims (`:344-351`). Here every node is padded to `space.max_columns` columns (zero
  columns, `column_mask`) so all (t, i) are vmapped; A is float32 (the reference: float64).
* Recovery: x = `sklearn.linear_model.Lasso(alpha=1e-5).fit(A, b).coef_` (`utils.py:365-368`,
  used at `:67-78`), i.e. 1/(2m) ||b - A x - c||^2 + alpha ||x||_1 with a fitted intercept c,
  once at init and once per epoch (`postrain`, `:182-203`); frozen nodes keep x (`:70-72`).
  `lasso` reproduces scikit-learn 1.9.1's cyclic coordinate descent (`_cd_fast.pyx`
  `enet_coordinate_descent`: centring, alpha * m, the initial gap check, gap-safe screening,
  the max-update test then the duality gap <= tol ||y_c||^2) in float32; the only deliberate
  difference is that the residual is recomputed from (X, w) after every sweep instead of
  being carried by axpy updates (same in exact arithmetic, less float32 drift).
* Support (`picking_optimal`, `:645-659`): per node, per edge the best op by signed x, then
  the `keep_edges` edges with the largest such value. Deviation (nhb DESIGN §5): the
  reference picks over `ops[:-1]`, which with no 'none' op drops dil_conv_5x5; here every op
  can be picked. Ties go to the lowest index (the reference uses torch.topk).
* Alphas (`sample_and_proj` `:138-157`, `proj_alphas` `:387-403`): alpha_S = b^T A_S - bias,
  bias = (A^T A - I)_{S,S} x_S, zero off S; equivalently Eq. 7 alpha_S = x_S + A_S^T (b - A_S
  x_S). The LASSO intercept is not used (it only enters the recovery objective).
* Freezing (`show_selected` `:86-98`): node frozen when ||x_new - x_last||_2 <= dist_limit,
  never at epoch 0 (the init recovery; `postrain` after 0-based epoch i tests with i + 1, so
  `end_of_epoch` can freeze after the first epoch); a frozen node's b stops training
  (`freeze_alpha`, here `mask_frozen_updates`). The new x is
  rejected when the derived child is too large (`:195-203`); the freeze flags are updated
  anyway, as in the reference. If all nodes are frozen the recovery is skipped (`Stop_flag`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nhb.space.arch import ArchSpace

Array = jax.Array


@flax.struct.dataclass
class IstaState:
    """Sparse-coding search state of all nodes of all cell types.

    Attributes:
        A: float32 [T, N, m, C] fixed measurement matrices (zero in padded columns).
        b: float32 [T, N, m] codes (trained).
        x: float32 [T, N, C] recovered sparse coefficients (last accepted).
        intercept: float32 [T, N] LASSO intercepts of `x`.
        support: bool [T, E, O] selected (edge, op) pairs of `x`.
        frozen: bool [T, N] frozen nodes.
        n_iter: int32 [T, N] coordinate-descent sweeps of the last recovery.
        space: the cell space (static).
    """

    A: Array
    b: Array
    x: Array
    intercept: Array
    support: Array
    frozen: Array
    n_iter: Array
    space: ArchSpace = flax.struct.field(pytree_node=False)


def column_mask(space: ArchSpace) -> np.ndarray:
    """bool [N, C]: column j of node i is a real (edge, op) column (j < node_inputs[i] * O)."""
    widths = np.asarray(space.node_inputs) * space.num_ops
    return np.arange(space.max_columns)[None, :] < widths[:, None]


def _edge_index(space: ArchSpace) -> tuple[np.ndarray, np.ndarray]:
    """(node [E, 1], column [E, O]) of each (edge, op): arr[..., node, col] is [..., E, O]."""
    node, pos = zip(*(space.edge_node(e) for e in range(space.num_edges)), strict=True)
    col = np.asarray(pos)[:, None] * space.num_ops + np.arange(space.num_ops)[None, :]
    return np.asarray(node)[:, None], col


def _to_edges(space: ArchSpace, cols: Array) -> Array:
    """[..., N, C] per-node columns -> [..., E, O]."""
    node, col = _edge_index(space)
    return cols[..., node, col]


def _to_columns(space: ArchSpace, edges: Array) -> Array:
    """[..., E, O] -> [..., N, C] per-node columns (zero / False in padded columns)."""
    node, col = _edge_index(space)
    out = jnp.zeros((*edges.shape[:-2], space.num_nodes, space.max_columns), edges.dtype)
    return out.at[..., node, col].set(edges)


def _gap(X: Array, y: Array, w: Array, R: Array, l1: Array) -> tuple[Array, Array, Array]:
    """sklearn's duality gap (formulation A, beta = 0): (gap, X^T R, ||X^T R||_inf)."""
    XtA = X.T @ R
    dual_norm = jnp.max(jnp.abs(XtA))
    R_norm2 = R @ R
    primal = 0.5 * R_norm2 + l1 * jnp.sum(jnp.abs(w))
    scale = jnp.where(dual_norm > l1, l1 / jnp.maximum(dual_norm, 1e-30), 1.0)
    dual = -0.5 * scale**2 * R_norm2 + scale * (R @ y)
    return primal - dual, XtA, dual_norm


def _screen(X: Array, norm2: Array, w: Array, R: Array, excluded: Array, gap: Array,
            XtA: Array, dual_norm: Array, l1: Array) -> tuple[Array, Array, Array]:
    """Gap-safe screening (sklearn `_cd_fast.pyx`, Eq. 11 of arXiv:1802.07481)."""
    theta = XtA / jnp.maximum(jnp.maximum(l1, dual_norm), 1e-30)
    d = (1.0 - jnp.abs(theta)) / jnp.sqrt(jnp.where(norm2 > 0, norm2, 1.0))
    include = d <= jnp.sqrt(2.0 * jnp.maximum(gap, 0.0)) / l1
    drop = ~excluded & ~include
    R = R + X @ jnp.where(drop, w, 0.0)
    return jnp.where(drop, 0.0, w), R, excluded | drop


def lasso(A: Array, b: Array, alpha: float = 1e-5, fit_intercept: bool = True,
          max_iter: int = 1000, tol: float = 1e-4) -> tuple[Array, Array, Array]:
    """`sklearn.linear_model.Lasso(alpha, tol=tol, max_iter=max_iter).fit(A, b)` in float32.

    Minimises 1/(2m) ||b - A x - c||^2 + alpha ||x||_1 by cyclic coordinate descent from
    x = 0 (sklearn 1.9.1 `enet_coordinate_descent`): A and b are centred when fitting the
    intercept; after a sweep whose largest update is <= tol * max|x| (or the last sweep) the
    duality gap is checked against tol * ||b - mean b||^2 and gap-safe screening is applied.
    Zero (e.g. padded) columns get coefficient 0. Vmappable and jittable (`lax.while_loop`).

    Args:
        A: [m, n] design matrix.
        b: [m] target.
        alpha: L1 strength (> 0).
        fit_intercept: centre A and b and return the intercept (sklearn's default True).
        max_iter: maximum sweeps.
        tol: sklearn's tolerance.

    Returns:
        (coef [n], intercept scalar, n_iter) with n_iter = sweeps run, as sklearn's `n_iter_`
        (== max_iter when it did not converge before the last sweep).
    """
    A = jnp.asarray(A, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    m, n = A.shape
    if fit_intercept:
        a_off, b_off = A.mean(0), b.mean()
    else:
        a_off, b_off = jnp.zeros(n, jnp.float32), jnp.zeros((), jnp.float32)
    X, y = A - a_off, b - b_off
    l1 = jnp.asarray(alpha * m, jnp.float32)
    norm2 = jnp.sum(X * X, 0)
    active = norm2 > 0
    inv_norm2 = jnp.where(active, 1.0 / jnp.where(active, norm2, 1.0), 0.0)
    tol_gap = tol * (y @ y)

    w = jnp.zeros(n, jnp.float32)
    gap, XtA, dual_norm = _gap(X, y, w, y, l1)
    done = gap <= tol_gap
    w, R, excluded = _screen(X, norm2, w, y, ~active, gap, XtA, dual_norm, l1)

    def cond(c):
        it, _, _, _, done = c
        return ~done & (it < max_iter)

    def body(c):
        it, w, R, excluded, _ = c

        def coord(j, carry):
            w, R = carry
            w_j, x_j = w[j], X[:, j]
            tmp = x_j @ R + w_j * norm2[j]
            new = jnp.sign(tmp) * jnp.maximum(jnp.abs(tmp) - l1, 0.0) * inv_norm2[j]
            new = jnp.where(excluded[j], w_j, new)
            return w.at[j].set(new), R + (w_j - new) * x_j

        w_new, _ = jax.lax.fori_loop(0, n, coord, (w, R))
        R = y - X @ w_new
        d_w_max = jnp.max(jnp.abs(w_new - w))
        w_max = jnp.max(jnp.abs(w_new))
        check = (w_max == 0) | (d_w_max <= tol * w_max) | (it == max_iter - 1)
        gap, XtA, dual_norm = _gap(X, y, w_new, R, l1)
        conv = check & (gap <= tol_gap)
        ws, Rs, es = _screen(X, norm2, w_new, R, excluded, gap, XtA, dual_norm, l1)
        screen = check & ~conv
        w_new = jnp.where(screen, ws, w_new)
        R = jnp.where(screen, Rs, R)
        excluded = jnp.where(screen, es, excluded)
        return it + 1, w_new, R, excluded, conv

    it, w, _, _, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), w, R, excluded, done))
    return w, b_off - a_off @ w, it


def recover(state: IstaState, alpha_l1: float = 1e-5) -> IstaState:
    """LASSO recovery of x (and intercept) for every (cell type, node); frozen nodes keep x.

    Args:
        state: the search state (its A, b, x, frozen are read).
        alpha_l1: sklearn's Lasso alpha (reference 1e-5).

    Returns:
        The state with x, intercept, n_iter replaced (support unchanged; see `select_support`).
    """
    solve = jax.vmap(jax.vmap(lambda A, b: lasso(A, b, alpha=alpha_l1)))
    x, c, it = solve(state.A, state.b)
    keep = state.frozen
    return state.replace(x=jnp.where(keep[..., None], state.x, x),
                         intercept=jnp.where(keep, state.intercept, c),
                         n_iter=jnp.where(keep, 0, it))


def select_support(space: ArchSpace, x: Array) -> Array:
    """The child network of x: per node `keep_edges[i]` edges with one op each.

    Per node and incoming edge the op with the largest signed x, then the `keep_edges[i]`
    edges whose best value is largest (`picking_optimal`, `ista_sup_single.py:645-659`).
    Unlike the reference, which picks over `ops[:-1]` and so can never select dil_conv_5x5
    (its op list has no 'none'), every op can be selected here. Ties go to the lowest index.

    Args:
        space: the cell space.
        x: [T, N, C] per-node coefficients (edge-major columns).

    Returns:
        bool [T, E, O] support with exactly keep_edges[i] ones per node.
    """
    K, n_ops = max(space.node_inputs), space.num_ops
    xe = jnp.asarray(x).reshape((*x.shape[:-1], K, n_ops))
    best_op = jnp.argmax(xe, -1)
    valid = np.arange(K)[None, :] < np.asarray(space.node_inputs)[:, None]  # [N, K]
    val = jnp.where(valid, jnp.max(xe, -1), -jnp.inf)  # [T, N, K]
    k = np.arange(K)
    beats = (val[..., None, :] > val[..., :, None]) | (
        (val[..., None, :] == val[..., :, None]) & (k[None, :] < k[:, None]))
    rank = jnp.sum(beats, -1)  # edges ahead of edge k
    keep = valid & (rank < np.asarray(space.keep_edges)[:, None])
    sel = keep[..., None] & (np.arange(n_ops) == best_op[..., None])
    return _to_edges(space, sel.reshape(x.shape))


def _support_columns(state: IstaState) -> Array:
    """float32 [T, N, C] 0/1 support of each node's columns."""
    return _to_columns(state.space, state.support).astype(jnp.float32)


def alphas(state: IstaState) -> Array:
    """Architecture weights, Eq. 7: alpha_S = x_S + A_S^T (b - A_S x_S) on the support, else 0.

    The LASSO intercept is not used (as in the reference `sample_and_proj`/`proj_alphas`).
    Differentiable in `state.b`: d alpha_S / d b = A_S^T.

    Returns:
        float32 [T, E, O] (`space.alpha_shape`), raw (no softmax, may be negative).
    """
    s = _support_columns(state)
    As = state.A * s[..., None, :]
    xs = state.x * s
    r = state.b - jnp.einsum("tnmc,tnc->tnm", As, xs)
    return _to_edges(state.space, s * (xs + jnp.einsum("tnmc,tnm->tnc", As, r)))


def alphas_via_bias(state: IstaState) -> Array:
    """The reference's form of `alphas`: b^T A_S - bias, bias = (A^T A - I)_{S,S} x_S.

    (`ista_sup_single.py:138-157,387-403`.) Equal to `alphas` (Eq. 7) up to rounding.
    """
    s = _support_columns(state)
    As = state.A * s[..., None, :]
    gram = jnp.einsum("tnmc,tnmd->tncd", As, As) - jnp.eye(state.space.max_columns)
    bias = s * jnp.einsum("tncd,tnd->tnc", gram, state.x * s)
    return _to_edges(state.space, jnp.einsum("tnm,tnmc->tnc", state.b, As) - bias)


def node_distances(x_new: Array, x_old: Array) -> Array:
    """[T, N] L2 distance ||x_new - x_old||_2 of each node's coefficients."""
    return jnp.linalg.norm(x_new - x_old, axis=-1)


def update_frozen(frozen: Array, x_new: Array, x_old: Array, threshold: float,
                  epoch: int | Array) -> Array:
    """Freeze test (`show_selected`, `ista_sup_single.py:86-98`).

    Args:
        frozen: bool [T, N] current flags (frozen stays frozen).
        x_new, x_old: [T, N, C] coefficients after / before the recovery.
        threshold: `dist_limit`; a node freezes when its distance is <= threshold.
        epoch: the reference's `show_selected` epoch: 0 at init (never freezes), i + 1 after
            epoch i.

    Returns:
        bool [T, N] new flags.
    """
    close = node_distances(x_new, x_old) <= threshold
    return frozen | (close & (jnp.asarray(epoch) > 0))


def all_frozen(state: IstaState) -> Array:
    """Scalar bool: every node of every cell type is frozen (the reference's `Stop_flag`)."""
    return jnp.all(state.frozen)


def init_ista(key: Array, space: ArchSpace, proj_dims: int) -> IstaState:
    """Initial state: A ~ U[0,1), b = 1e-3 N(0,1), then a recovery and its support.

    (`ista_sup_single.py:49-62,344-351`; no node is frozen at init.) Jit with
    `static_argnums=(1, 2)`.

    Args:
        key: PRNG key.
        space: the cell space.
        proj_dims: m, the length of each code.

    Returns:
        The initial `IstaState`.
    """
    ka, kb = jax.random.split(key)
    T, N, C = space.num_cell_types, space.num_nodes, space.max_columns
    mask = jnp.asarray(column_mask(space), jnp.float32)
    A = jax.random.uniform(ka, (T, N, proj_dims, C)) * mask[None, :, None, :]
    b = 1e-3 * jax.random.normal(kb, (T, N, proj_dims))
    state = IstaState(
        A=A, b=b, x=jnp.zeros((T, N, C)), intercept=jnp.zeros((T, N)),
        support=jnp.zeros(space.alpha_shape, bool), frozen=jnp.zeros((T, N), bool),
        n_iter=jnp.zeros((T, N), jnp.int32), space=space)
    state = recover(state)
    return state.replace(support=select_support(space, state.x))


@jax.jit
def _candidate(state: IstaState, epoch: Array, dist_limit: Array, alpha_l1: Array):
    new = recover(state, alpha_l1)
    frozen = update_frozen(state.frozen, new.x, state.x, dist_limit, epoch + 1)
    return new, select_support(state.space, new.x), frozen, node_distances(new.x, state.x)


def end_of_epoch(state: IstaState, epoch: int | Array, dist_limit: float,
                 accept_fn: Callable[[np.ndarray], bool] | None = None,
                 alpha_l1: float = 1e-5) -> tuple[IstaState, dict[str, Any]]:
    """The reference's `postrain` (`ista_sup_single.py:182-203`) after epoch `epoch`.

    Recovery (frozen nodes keep x), the freeze test (run as the reference's
    `show_selected(epoch + 1)`, so a node can freeze after the first epoch; only the init
    recovery is "epoch 0"), the support of the new x, then the size test: if `accept_fn` is
    given and `accept_fn(support)` is False the new x is rejected (x, intercept, support stay);
    the freeze flags are updated either way, as in the reference. If every node was already
    frozen (`Stop_flag`) nothing changes. Jittable when `accept_fn` is None; with `accept_fn`
    (a host-side callable, e.g. a parameter count) call it outside jit.

    Args:
        state: the search state.
        epoch: 0-based index of the epoch that just ended.
        dist_limit: freeze threshold on ||x_new - x_old||_2.
        accept_fn: optional `support (bool numpy [T, E, O]) -> bool`.
        alpha_l1: sklearn's Lasso alpha.

    Returns:
        (new state, info) with info: dist [T, N], n_iter [T, N], candidate support [T, E, O],
        accepted and stopped (scalar bools).
    """
    new, support, frozen, dist = _candidate(state, jnp.asarray(epoch), jnp.asarray(dist_limit),
                                            jnp.asarray(alpha_l1, jnp.float32))
    stopped = all_frozen(state)
    if accept_fn is None:
        accepted = ~stopped
    else:
        accepted = jnp.asarray(not bool(stopped) and bool(accept_fn(np.asarray(support))))

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(accepted, a, b)

    out = state.replace(x=pick(new.x, state.x), intercept=pick(new.intercept, state.intercept),
                        n_iter=pick(new.n_iter, state.n_iter),
                        support=pick(support, state.support),
                        frozen=jnp.where(stopped, state.frozen, frozen))
    info = {"dist": dist, "n_iter": new.n_iter, "support": support, "accepted": accepted,
            "stopped": stopped}
    return out, info


def code_optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """PyTorch `Adam(lr, betas=(0.5, 0.999), weight_decay)` for the codes b.

    (`searchmanager_darts.py:534-535`; coupled L2: wd * b is added to the gradient.)
    """
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.adam(lr, b1=0.5, b2=0.999, eps=1e-8))


def mask_frozen_updates(updates_b: Array, frozen: Array) -> Array:
    """Zero the [T, N, m] updates of frozen nodes (a frozen node's b stops training)."""
    return jnp.where(frozen[..., None], 0.0, updates_b)
