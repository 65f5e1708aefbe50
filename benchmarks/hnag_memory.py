"""NAGO memory per sample: PyTorch's saved tensors (hooks) vs nhb's closed form and proxies.

For ~10 hierarchies sampled from the paper's HNAG space (thirds, 4M parameter limit, 32 px)
plus the four Table-3 CIFAR optima (HNAG-BOHB / HNAG-MOBO on CIFAR-10 / CIFAR-100):

* `torch_bytes`: the unique tensors PyTorch's autograd saves for backward in one train-mode
  forward of `hnag_torch.build_torch` plus `cross_entropy` at batch 8, measured with
  `torch.autograd.graph.saved_tensors_hooks`, keyed by (storage data_ptr, shape) (parameters
  included, a tensor saved by several ops once). A stricter key (storage, offset, shape,
  stride, dtype) is reported too (`torch_bytes_strict`);
* `closed_form_bytes`: `nhb.nago.memory.torch_saved_bytes` (no torch), which must equal it;
* `torch_mib_per_image` = torch_bytes / 8 / 2**20 (`torch_memory_per_image_mb`);
* `jax_proxy_mib_per_image`: (b) `activation_bytes_per_image` of `nhb.models.hnag` (about
  twice PyTorch's; see `nhb.nago.memory`), optima only unless --jax-all;
* `paper_mps_mb`: Table 3's MPS (optima only);
* `variants`: closed form vs hooks off the default setting: the first 3 samples at 8 px
  (cells down to 1x1) and 64 px (the stride-4 stem), batch 2, m = 4, and 2 RNAG samples.

Usage (about a minute on a busy 2-core CPU; needs torch):

    python benchmarks/hnag_memory.py [--samples 10] [--jax-all] [--out PATH]

Writes `benchmarks/results/hnag_memory_cpu.json` through `provenance.write_result`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np
import torch
from torch.nn.functional import cross_entropy

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hnag_torch
import provenance

from nhb.models.hnag import make_model
from nhb.models.hnag_count import param_count
from nhb.nago import graphs, memory
from nhb.nago.graphs import Hierarchy
from nhb.space import generators

PARAM_LIMIT = 4.0e6
BATCH = 8
PAPER_MPS = {("bohb", "cifar10"): 17.0, ("bohb", "cifar100"): 14.0,
             ("mobo", "cifar10"): 13.0, ("mobo", "cifar100"): 13.0}  # Table 3, MB
OUT = provenance.RESULTS / "hnag_memory_cpu.json"


def torch_saved(h: Hierarchy, width: int, num_classes: int, image_size: int = 32,
                batch_size: int = BATCH) -> dict[str, int]:
    """Unique saved-for-backward bytes of one train-mode forward + cross-entropy.

    Args:
        h: the hierarchy.
        width: m.
        num_classes: classifier outputs.
        image_size: input side.
        batch_size: images.

    Returns:
        Dict with `bytes` (key: storage data_ptr + shape), `bytes_strict` (storage, offset,
        shape, stride, dtype), `packs` (hook calls) and `unique` (tensors under the key).
    """
    model = hnag_torch.build_torch(h, width, num_classes, image_size, seed=0).train()
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.arange(batch_size) % num_classes
    loose: dict[tuple, int] = {}
    strict: dict[tuple, int] = {}
    packs = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, shape = t.untyped_storage().data_ptr(), tuple(t.shape)
        nbytes = t.numel() * t.element_size()
        loose[(ptr, shape)] = nbytes
        strict[(ptr, t.storage_offset(), shape, t.stride(), t.dtype)] = nbytes
        packs[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cross_entropy(model(x), y)  # the graph (and the saved tensors) die on return
    return dict(bytes=sum(loose.values()), bytes_strict=sum(strict.values()), packs=packs[0],
                unique=len(loose))


def jax_proxy_mib(h: Hierarchy, width: int, num_classes: int, image_size: int = 32) -> float:
    """(b) `activation_bytes_per_image` of nhb's Linen network, MiB."""
    model = make_model(h, width, num_classes, image_size)
    return memory.activation_bytes_per_image(model, (image_size, image_size, 3)) / memory.MB


def row(name: str, vector: Any, h: Hierarchy, num_classes: int, jax: bool) -> dict:
    """Measures one hierarchy."""
    width = graphs.channel_multiplier(h, PARAM_LIMIT)
    t0 = time.perf_counter()
    got = torch_saved(h, width, num_classes)
    closed = memory.torch_saved_bytes(h, width, num_classes, batch_size=BATCH)
    out = dict(name=name, vector=[float(v) for v in vector], num_classes=num_classes,
               width=width, params=param_count(h, width, num_classes),
               summary=graphs.summary(h), torch_bytes=got["bytes"],
               torch_bytes_strict=got["bytes_strict"], torch_packs=got["packs"],
               torch_unique=got["unique"], closed_form_bytes=closed,
               difference_bytes=closed - got["bytes"],
               torch_mib_per_image=got["bytes"] / BATCH / memory.MB,
               closed_form_mib_per_image=memory.torch_memory_per_image_mb(h, width, num_classes),
               torch_seconds=time.perf_counter() - t0)
    if jax:
        out["jax_proxy_mib_per_image"] = jax_proxy_mib(h, width, num_classes)
    return out


def variant(name: str, h: Hierarchy, image_size: int, batch: int, width: int) -> dict:
    """Hooks vs closed form at another image size / batch / width (10 classes)."""
    got = torch_saved(h, width, 10, image_size, batch)
    closed = memory.torch_saved_bytes(h, width, 10, image_size, batch)
    return dict(name=name, family=h.family, image_size=image_size, batch=batch, width=width,
                torch_bytes=got["bytes"], torch_bytes_strict=got["bytes_strict"],
                closed_form_bytes=closed, difference_bytes=closed - got["bytes"])


def main(argv: list[str] | None = None) -> dict:
    """Runs the comparison and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jax-all", action="store_true", help="JAX proxy for samples too")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    space = generators.make("hnag")
    rows = []
    for (method, data), mps in PAPER_MPS.items():
        vec = generators.TABLE3[method][data]
        h = graphs.sample(space, vec)
        assert isinstance(h, Hierarchy), h
        r = row(f"{method}-{data}", vec, h, 100 if data == "cifar100" else 10, jax=True)
        rows.append({**r, "paper_mps_mb": mps})
        print(f"{r['name']:>15}: torch {r['torch_mib_per_image']:.2f} MiB, closed "
              f"{r['closed_form_mib_per_image']:.2f}, jax {r['jax_proxy_mib_per_image']:.2f}, "
              f"paper {mps} MB (diff {r['difference_bytes']} B)", flush=True)
    rng = np.random.default_rng(args.seed)
    key, k = jax.random.key(args.seed), 0
    while sum(r["name"].startswith("sample") for r in rows) < args.samples:
        key, sub = jax.random.split(key)
        vec = np.asarray(space.sample(sub))
        h = graphs.sample(space, vec)
        k += 1
        if not isinstance(h, Hierarchy):
            continue
        if h.num_ops > 150:  # keep the CPU run short
            continue
        r = row(f"sample{k}", vec, h, int(rng.choice([10, 100])), jax=args.jax_all)
        rows.append(r)
        print(f"{r['name']:>15}: ops {h.num_ops:3d} torch {r['torch_mib_per_image']:.2f} MiB, "
              f"closed {r['closed_form_mib_per_image']:.2f} (diff {r['difference_bytes']} B)",
              flush=True)
    variants = []
    cases = [(r, img) for r in rows if r["name"].startswith("sample") for img in (8, 64)][:6]
    for r, img in cases:
        h = graphs.sample(space, r["vector"])
        variants.append(variant(r["name"], h, img, 2, 4))
    rspace, key = generators.make("rnag"), jax.random.key(args.seed + 1)
    while len(variants) < len(cases) + 2:
        key, sub = jax.random.split(key)
        h = graphs.sample(rspace, np.asarray(rspace.sample(sub)))
        if isinstance(h, Hierarchy) and h.num_ops <= 60:
            variants.append(variant(f"rnag{len(variants)}", h, 32, 8, 8))
    print("variants (name, px, batch, m, torch, closed):",
          [(v["name"], v["image_size"], v["batch"], v["width"], v["torch_bytes"],
            v["closed_form_bytes"]) for v in variants])
    exact = all(r["difference_bytes"] == 0 for r in rows + variants)
    strict_same = all(r["torch_bytes_strict"] == r["torch_bytes"] for r in rows + variants)
    print(f"closed form == torch hooks on all {len(rows) + len(variants)}: {exact}; "
          f"strict key agrees: {strict_same}")
    payload = dict(
        what="PyTorch saved-for-backward bytes (unique tensors, parameters included) of the "
             "authors' NAGO network at batch 8 vs nhb.nago.memory.torch_saved_bytes",
        settings=dict(batch_size=BATCH, param_limit=PARAM_LIMIT, image_size=32,
                      stage_ratios="thirds", space="hnag paper", torch=torch.__version__,
                      units="MiB = 2**20 bytes; paper MPS in its 'MB'"),
        all_exact=exact, strict_key_agrees=strict_same, rows=rows, variants=variants)
    provenance.write_result(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
