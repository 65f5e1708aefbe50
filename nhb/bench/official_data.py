"""The official NAS-HPO-Bench-II pickles, verified: sha256 manifest, one conversion, a cache.

Users download the authors' three files (`bench12.pkl`, `cellinfo.pkl`, `avgaccs200.pkl`,
see the README) into a folder. `load_official_dir(folder)`:

1. hashes each file (sha256) and checks it against the manifest shipped with the package
   (`official_manifest.json`; or one given): a missing file, or a digest that differs from
   the manifest's, raises `OfficialDataError` naming the file and the expected digest;
   a file whose digest the manifest does not know raises too unless `allow_unknown=True`
   (then a warning names the file and its digest);
2. converts the pickles once to nhb's table format (`nhb.bench.official.import_official`)
   and caches the table in `<folder>/.nhb_cache/official_<digests>.nhb` (atomically; the
   name hashes the three digests, so changed files are converted again);
3. returns the cached table on later calls (its own array checksums verified on load).

The official digests are not known on the machines nhb is developed on (the files cannot be
downloaded there), so the shipped manifest lists the files with `null` digests: until they
are filled in, loading real files needs `allow_unknown=True` (`--table=unverified:DIR` on the
command line). The mechanism itself is tested with tables exported by
`nhb.bench.official.export_official`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from collections.abc import Mapping

from nhb.bench.official import FILES, import_official
from nhb.bench.table import Table, TableError, load_table, save_table

MANIFEST = pathlib.Path(__file__).with_name("official_manifest.json")
CACHE_DIR = ".nhb_cache"
UNVERIFIED_PREFIX = "unverified:"


class OfficialDataError(TableError):
    """An official data file is missing or its digest differs from the manifest."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, str | None]:
    """File name -> expected sha256 (None: unknown) of a manifest (default: the package's)."""
    data = json.loads(pathlib.Path(path or MANIFEST).read_text())
    return {name: data["files"].get(name) for name in FILES}


def is_official_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding the official `bench12.pkl`."""
    p = pathlib.Path(path)
    return p.is_dir() and (p / FILES[0]).is_file()


def verify_official_dir(folder: str | os.PathLike,
                        manifest: Mapping[str, str | None] | None = None,
                        allow_unknown: bool = False) -> dict[str, str]:
    """Checks the three official files against the manifest.

    Args:
        folder: the folder with the files.
        manifest: file name -> expected sha256 or None (default: the package's manifest).
        allow_unknown: accept files whose digest the manifest does not know (with a warning).

    Returns:
        File name -> its sha256.

    Raises:
        OfficialDataError: a file is missing, its digest differs from the manifest's, or it
            is unknown and `allow_unknown` is False; the message names the file and the
            expected digest.
    """
    folder = pathlib.Path(folder)
    manifest = read_manifest() if manifest is None else manifest
    digests = {}
    for name in FILES:
        expected = manifest.get(name)
        path = folder / name
        if not path.is_file():
            raise OfficialDataError(f"{path}: official file {name} is missing (download it as "
                                    f"the README says; expected sha256 {expected or 'unknown'})")
        got = sha256_file(path)
        digests[name] = got
        if expected is None:
            msg = (f"{path}: the manifest has no sha256 for {name} (this file's is {got}); "
                   "its contents are unverified")
            if not allow_unknown:
                raise OfficialDataError(msg + ": pass allow_unknown=True (--table=unverified:"
                                        f"{folder}) to use it anyway")
            warnings.warn(msg, stacklevel=2)
        elif got != expected:
            raise OfficialDataError(f"{path}: sha256 {got} differs from the manifest's {expected} "
                                    f"for {name} (a corrupt or different file)")
    return digests


def load_official_dir(folder: str | os.PathLike, *,
                      manifest: Mapping[str, str | None] | None = None,
                      allow_unknown: bool = False,
                      cache_dir: str | os.PathLike | None = None) -> Table:
    """The verified official data as an nhb table, converted once and cached.

    Args:
        folder: the folder with `bench12.pkl`, `cellinfo.pkl`, `avgaccs200.pkl`.
        manifest: expected digests (default: the package's `official_manifest.json`).
        allow_unknown: accept files the manifest has no digest for (with a warning).
        cache_dir: where the converted table goes (default `<folder>/.nhb_cache`).

    Returns:
        The table (`nhb.bench.official.import_official` of the files).

    Raises:
        OfficialDataError: see `verify_official_dir`.
    """
    folder = pathlib.Path(folder)
    digests = verify_official_dir(folder, manifest, allow_unknown)
    key = hashlib.sha256("".join(digests[n] for n in FILES).encode()).hexdigest()[:16]
    cache = pathlib.Path(cache_dir) if cache_dir is not None else folder / CACHE_DIR
    path = cache / f"official_{key}.nhb"
    if path.is_file():
        return load_table(path)
    manifest = read_manifest() if manifest is None else manifest
    verified = all(manifest.get(n) == digests[n] for n in FILES)
    # files matching the manifest are the authors' own: their pickles may be loaded as is;
    # unknown files go through the safe unpickler (plain data only)
    table = import_official(*(folder / n for n in FILES), trusted=verified,
                            meta={"sha256": digests, "verified": verified})
    save_table(table, path)
    return table
