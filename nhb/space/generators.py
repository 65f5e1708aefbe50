"""NAGO's generator spaces (Ru et al. 2020): HNAG and RNAG as bounded mixed int/float vectors.

A generator is a short vector of random-graph hyperparameters (`nhb.nago.graphs` samples the
networks it describes). The vector holds the VALUES (integers stored as whole floats); the
search algorithms work on the unit cube through `to_unit` / `from_unit`, which use
ConfigSpace's encoding (what HpBandSter's KDE sees): a float dim maps linearly, an integer
dim in [lo, hi] is a float on [lo - 0.49999, hi + 0.49999] rounded to the nearest integer.

* **HNAG** (8 values, reference/nago.md §1): top Watts-Strogatz (N, K, P), middle
  Erdos-Renyi (N, P), bottom Watts-Strogatz (N, K, P).
  - ranges "paper" (default, DESIGN §4): top/bottom N int [3, 10], K int [2, 5], P [0.1, 1];
    mid N int [1, 10], P [0.1, 1]. The paper's Appendix E numbers are lost; mid N from 1 and
    mid P from 0.1 are inferred from its Table 3 (an assumption).
  - ranges "released" (the authors' nago.yml:29-52): the same but mid N [3, 10], P [0.2, 1].
* **RNAG** (9 values, P:47): three Watts-Strogatz stages (N, K, P) in sequence. Its ranges
  are lost; nhb's ASSUMPTION: N int [3, 40], K int [2, 10], P [0.1, 1], which contains
  RandWire's default WS(32, 4, 0.75) per stage (`RNAG_D`, the paper's RNAG-D).

* ranges "cpu" and "tiny" (both families): sub-boxes of the paper's for a 2-core CPU, NOT
  paper settings: every network of the space is a fresh XLA compile, which takes minutes on
  a 2-core CPU for the larger ones (HNAG up to 10 x 10 x 10 ops). "cpu" (the default of
  `experiments/nago.py` at CPU scale): HNAG top/bottom N [3, 6], K [2, 5], mid N [1, 4]; RNAG
  N [3, 16], K [2, 6]. "tiny" (tests, notebook, `--quick`): HNAG top/bottom N [3, 4], K [2, 3],
  mid N [1, 2]; RNAG N [3, 8], K [2, 4]. P ranges as the paper's ([0.1, 1]).

`sample`, `mutate`, `to_unit`, `from_unit` are jittable; `validate` raises a ValueError that
names the valid ranges; `to_configspace` exports a ConfigSpace `ConfigurationSpace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FAMILIES = ("hnag", "rnag")
RANGES = {"hnag": ("paper", "released", "cpu", "tiny"), "rnag": ("nhb", "cpu", "tiny")}
# (N, K) boxes of the WS graphs and (N, P) of HNAG's middle ER graph per range set
_WS_BOX = {"paper": ((3, 10), (2, 5)), "released": ((3, 10), (2, 5)), "cpu": ((3, 6), (2, 5)),
           "tiny": ((3, 4), (2, 3))}
_ER_BOX = {"paper": ((1, 10), (0.1, 1.0)), "released": ((3, 10), (0.2, 1.0)),
           "cpu": ((1, 4), (0.1, 1.0)), "tiny": ((1, 2), (0.1, 1.0))}
_RNAG_BOX = {"nhb": ((3, 40), (2, 10)), "cpu": ((3, 16), (2, 6)), "tiny": ((3, 8), (2, 4))}
INT, FLOAT = "int", "float"
_PAD = 0.49999  # ConfigSpace's integer padding

HNAG_NAMES = ("top_n", "top_k", "top_p", "mid_n", "mid_p", "bottom_n", "bottom_k", "bottom_p")
RNAG_NAMES = tuple(f"stage{s}_{v}" for s in (1, 2, 3) for v in ("n", "k", "p"))
RNAG_D = (32.0, 4.0, 0.75) * 3

# The paper's Table 3 optima (top N K P | mid N P | bottom N K P), HNAG-BOHB then HNAG-MOBO.
TABLE3 = {
    "bohb": {"cifar10": (8, 5, .6, 1, .7, 5, 4, .2), "cifar100": (8, 5, .4, 1, .7, 4, 2, .4),
             "sport8": (7, 2, .9, 5, .8, 6, 3, .6), "mit67": (9, 4, .6, 1, .2, 3, 2, .5),
             "flowers102": (6, 4, .4, 1, .4, 6, 5, .9), "imagenet": (4, 2, .5, 5, .6, 6, 4, .4)},
    "mobo": {"cifar10": (6, 4, .8, 1, .1, 3, 2, .5), "cifar100": (6, 4, .3, 1, .7, 3, 2, .5),
             "sport8": (3, 2, .3, 1, .2, 3, 2, .8), "mit67": (3, 2, .6, 1, .8, 4, 2, .6),
             "flowers102": (6, 5, .2, 1, .8, 3, 2, .5)},
}


@dataclasses.dataclass(frozen=True)
class Dim:
    """One hyperparameter: `kind` INT or FLOAT on the closed range [low, high]."""

    name: str
    kind: str
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class GeneratorSpace:
    """A bounded mixed int/float generator space.

    Attributes:
        family: "hnag" or "rnag".
        ranges: which range set ("paper" / "released" for HNAG, "nhb" for RNAG).
        dims: the hyperparameters in vector order.
    """

    family: str
    ranges: str
    dims: tuple[Dim, ...]

    @property
    def dim(self) -> int:
        """Number of hyperparameters."""
        return len(self.dims)

    @property
    def names(self) -> tuple[str, ...]:
        """Hyperparameter names in vector order."""
        return tuple(d.name for d in self.dims)

    @property
    def is_int(self) -> np.ndarray:
        """bool [D]: integer dimensions."""
        return np.array([d.kind == INT for d in self.dims])

    @property
    def low(self) -> np.ndarray:
        """float [D] lower bounds."""
        return np.array([d.low for d in self.dims], np.float32)

    @property
    def high(self) -> np.ndarray:
        """float [D] upper bounds."""
        return np.array([d.high for d in self.dims], np.float32)

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        pad = np.where(self.is_int, _PAD, 0.0)
        return (self.low - pad).astype(np.float32), (self.high + pad).astype(np.float32)

    def to_unit(self, x: jax.Array) -> jax.Array:
        """Values [..., D] -> ConfigSpace's unit-cube vector [..., D]."""
        lo, hi = self._box()
        return (jnp.asarray(x, jnp.float32) - lo) / (hi - lo)

    def from_unit(self, u: jax.Array) -> jax.Array:
        """Unit-cube vector [..., D] (clipped to [0, 1]) -> values, integers rounded."""
        lo, hi = self._box()
        v = lo + jnp.clip(jnp.asarray(u, jnp.float32), 0.0, 1.0) * (hi - lo)
        v = jnp.where(self.is_int, jnp.round(v), v)
        return jnp.clip(v, self.low, self.high)

    def canonical_unit(self, u: jax.Array) -> jax.Array:
        """The unit vector of the config a unit vector decodes to (integers snapped)."""
        return self.to_unit(self.from_unit(u))

    def sample(self, key: jax.Array, shape: Sequence[int] = ()) -> jax.Array:
        """Uniform configs (as ConfigSpace samples them): float32 values [*shape, D]."""
        return self.from_unit(jax.random.uniform(key, (*shape, self.dim)))

    def mutate(self, key: jax.Array, x: jax.Array) -> jax.Array:
        """One hyperparameter, chosen uniformly, redrawn uniformly from its range (an integer
        is moved to a different value); the others are kept. nhb's choice (NAGO itself does
        not mutate).

        Args:
            key: PRNG key.
            x: values [D].

        Returns:
            The mutant [D].
        """
        k_dim, k_val = jax.random.split(key)
        i = jax.random.randint(k_dim, (), 0, self.dim)
        low, high = jnp.asarray(self.low)[i], jnp.asarray(self.high)[i]
        u = jax.random.uniform(k_val)
        n_other = high - low  # integer: values other than the current one
        step = jnp.floor(u * n_other) + 1.0
        as_int = low + jnp.mod(x[i] - low + step, n_other + 1.0)
        as_float = low + u * (high - low)
        new = jnp.where(jnp.asarray(self.is_int)[i], as_int, as_float)
        return x.at[i].set(new.astype(x.dtype))

    def validate(self, x: Any) -> np.ndarray:
        """Checks a vector of values.

        Args:
            x: sequence of D numbers.

        Returns:
            float64 [D] (integers as whole floats).

        Raises:
            ValueError: wrong length, a non-finite value, an integer dim with a fractional
                value, or a value outside its range; the message lists the valid ranges.
        """
        v = np.asarray(x, np.float64).reshape(-1)
        bad = []
        if v.shape != (self.dim,):
            bad.append(f"expected {self.dim} values, got {v.size}")
        else:
            for d, val in zip(self.dims, v, strict=True):
                if not np.isfinite(val) or not d.low <= val <= d.high or (
                        d.kind == INT and val != np.round(val)):
                    bad.append(f"{d.name}={val:g}")
        if bad:
            raise ValueError(f"invalid {self.family.upper()} vector ({'; '.join(bad)}); valid "
                             f"ranges ({self.ranges}): {self.describe()}")
        return v

    def describe(self) -> str:
        """The ranges as text, e.g. 'top_n int [3, 10], top_p float [0.1, 1]'."""
        return ", ".join(f"{d.name} {d.kind} [{d.low:g}, {d.high:g}]" for d in self.dims)

    def as_dict(self, x: Any) -> dict[str, float | int]:
        """Named values of a (validated) vector."""
        v = self.validate(x)
        return {d.name: int(val) if d.kind == INT else float(val)
                for d, val in zip(self.dims, v, strict=True)}

    def to_configspace(self, seed: int | None = None) -> Any:
        """The space as a ConfigSpace `ConfigurationSpace` (needs the `ConfigSpace` package)."""
        try:
            import ConfigSpace as cs
        except ImportError as e:  # pragma: no cover - exercised only without ConfigSpace
            raise ImportError("to_configspace needs ConfigSpace: pip install ConfigSpace") from e
        space = cs.ConfigurationSpace(seed=seed)
        for d in self.dims:
            if d.kind == INT:
                space.add(cs.UniformIntegerHyperparameter(d.name, int(d.low), int(d.high)))
            else:
                space.add(cs.UniformFloatHyperparameter(d.name, d.low, d.high))
        return space


def _ws(prefix: str, n: tuple[int, int], k: tuple[int, int] = (2, 5),
        p: tuple[float, float] = (0.1, 1.0)) -> tuple[Dim, ...]:
    return (Dim(f"{prefix}_n", INT, *n), Dim(f"{prefix}_k", INT, *k),
            Dim(f"{prefix}_p", FLOAT, *p))


def make(family: str = "hnag", ranges: str | None = None) -> GeneratorSpace:
    """A generator space.

    Args:
        family: "hnag" or "rnag".
        ranges: HNAG: "paper" (default), "released", "cpu" or "tiny"; RNAG: "nhb"
            (default), "cpu" or "tiny".

    Returns:
        The `GeneratorSpace`.

    Raises:
        ValueError: an unknown family or range set (the message lists the valid ones).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown generator family {family!r}; valid: {FAMILIES}")
    ranges = ranges or RANGES[family][0]
    if ranges not in RANGES[family]:
        raise ValueError(f"unknown {family} ranges {ranges!r}; valid: {RANGES[family]}")
    if family == "rnag":
        n, k = _RNAG_BOX[ranges]
        dims = sum((_ws(f"stage{s}", n, k) for s in (1, 2, 3)), ())
        return GeneratorSpace("rnag", ranges, dims)
    (n, k), (mid_n, mid_p) = _WS_BOX[ranges], _ER_BOX[ranges]
    dims = (*_ws("top", n, k), Dim("mid_n", INT, *mid_n), Dim("mid_p", FLOAT, *mid_p),
            *_ws("bottom", n, k))
    return GeneratorSpace("hnag", ranges, dims)
