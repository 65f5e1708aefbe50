"""Provenance of a benchmark result: which code, when, how invoked, on which machine.

Every script in `benchmarks/` writes its JSON through `write_result`, which adds

    "provenance": {
      "git_commit": full sha of HEAD (null outside a git checkout),
      "dirty": true if tracked files differ from HEAD (`git status --porcelain
               --untracked-files=no`), with the paths in "dirty_files",
      "date_utc": ISO 8601 time of writing, UTC,
      "argv": sys.argv,
      "machine": {platform, python, cpu_model, cpu_cores, memory_gib, loadavg},
      "jax": {jax, jaxlib, backend, devices, device_kind} (null if JAX does not import),
      "reconstructed": false
    }

and writes the file atomically (temp file in the same folder, then `os.replace`, via
`nhb._io.atomic_write`). A result from a dirty tree is still written, with a warning: it
cannot be traced to a commit, so re-run it from a clean checkout before citing it.
Results written before this module existed carry the same key with "reconstructed": true,
filled from git history (the commit that added the file) and whatever the file recorded
("how" in each says exactly what).

Check it without running a benchmark (prints this process's record, then checks that every
JSON in benchmarks/results/ has a provenance entry with the required keys):

    python benchmarks/provenance.py
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

from nhb._io import atomic_write_text

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
REQUIRED_KEYS = ("git_commit", "dirty", "date_utc", "argv", "machine", "jax", "reconstructed")


def _git(*args: str) -> str | None:
    """stdout of `git args` in the repository, or None if git fails."""
    try:
        res = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout


def git_state() -> dict[str, Any]:
    """HEAD's full sha and whether tracked files differ from it.

    Result files (`benchmarks/results/`) do not count: a run of one benchmark rewrites its
    JSON, which must not mark the next benchmark of the same session as run on dirty code.
    """
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty_files = sorted(line[3:] for line in (status or "").splitlines()
                         if line.strip() and not line[3:].startswith("benchmarks/results/"))
    return dict(git_commit=head.strip() if head else None,
                dirty=None if status is None else bool(dirty_files),
                dirty_files=dirty_files)


def _cpu_model() -> str | None:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load matters on shared machines)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(platform=platform.platform(), python=platform.python_version(),
                cpu_model=_cpu_model(), cpu_cores=os.cpu_count(), memory_gib=_memory_gib(),
                loadavg=None if load is None else [round(x, 2) for x in load])


def jax_info() -> dict[str, Any] | None:
    """JAX and jaxlib versions, the default backend and its devices (None without JAX)."""
    try:
        import jax
        import jaxlib
    except ImportError:
        return None
    devices = jax.devices()
    return dict(jax=jax.__version__, jaxlib=jaxlib.__version__, backend=jax.default_backend(),
                devices=[str(d) for d in devices],
                device_kind=getattr(devices[0], "device_kind", None) if devices else None)


def provenance() -> dict[str, Any]:
    """The provenance record of a result written now by this process (see the module doc)."""
    return dict(**git_state(),
                date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                argv=list(sys.argv), machine=machine(), jax=jax_info(), reconstructed=False)


def write_result(path: str | os.PathLike, payload: dict[str, Any], *,
                 allow_nan: bool = True) -> pathlib.Path:
    """Writes `payload` plus its "provenance" as indented JSON, atomically.

    Args:
        path: destination (folders are created).
        payload: the result, a JSON-serialisable dict without a "provenance" key (values
            JSON cannot hold are written as their `str`).
        allow_nan: passed to `json.dumps` (False: NaN / inf raise instead of being written).

    Returns:
        The destination path.

    Raises:
        ValueError: `payload` already has a "provenance" key.
    """
    if "provenance" in payload:
        raise ValueError("payload already has a 'provenance' key")
    record = provenance()
    if record["dirty"]:
        files = record["dirty_files"]
        listed = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        print(f"warning: {path} is written from a dirty tree (modified: {listed}); re-run "
              "from a clean commit before citing it", file=sys.stderr)
    text = json.dumps({**payload, "provenance": record}, indent=1, allow_nan=allow_nan,
                      default=str)
    return atomic_write_text(path, text + "\n")


def check_results(folder: str | os.PathLike = RESULTS) -> list[str]:
    """Problems with the provenance entries of the JSON files in `folder` (empty: none)."""
    problems = []
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        record = json.loads(path.read_text()).get("provenance")
        if not isinstance(record, dict):
            problems.append(f"{path.name}: no provenance")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            problems.append(f"{path.name}: provenance lacks {missing}")
        elif not record["git_commit"] or len(record["git_commit"]) != 40:
            problems.append(f"{path.name}: git_commit is not a full sha")
        elif record["dirty"] and not record["reconstructed"]:
            problems.append(f"{path.name}: written from a dirty tree")
    return problems


if __name__ == "__main__":
    print(json.dumps(provenance(), indent=1))
    found = check_results()
    for line in found:
        print(line, file=sys.stderr)
    print(f"{len(list(RESULTS.glob('*.json')))} result files, {len(found)} problems")
    sys.exit(1 if found else 0)
