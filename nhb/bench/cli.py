"""Shared command-line plumbing: the `--table` flag (one help text, one resolution) and errors.

Every binary that reads a table takes `--table` as a build directory (its `table.nhb`), a
table file (`nhb.bench.load_table`), or a folder of the official pickles
(`nhb.bench.official_data.load_official_dir`: sha256-verified, converted once, cached), plus
demo names where the binary offers them ('random': `random_table`). `main_guard` turns the
user errors these raise (`TableError`, `ValueError`, missing files) into one `error: ...` line
and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from nhb.bench.fake import random_table
from nhb.bench.official_data import UNVERIFIED_PREFIX, is_official_dir, load_official_dir
from nhb.bench.table import TABLE_HELP, Table, load_table

RANDOM_HELP = " Or 'random' for a synthetic demo table (random_table; not real data)."


def define_table_flag(extra_help: str = RANDOM_HELP, flag_values=None):
    """Defines `--table` (string, default None) with the common help text.

    Args:
        extra_help: appended to `TABLE_HELP` (the binary's demo names, if any).
        flag_values: absl FlagValues (default the global FLAGS).

    Returns:
        The absl flag holder.
    """
    from absl import flags

    kwargs = {} if flag_values is None else dict(flag_values=flag_values)
    return flags.DEFINE_string("table", None, TABLE_HELP + extra_help, **kwargs)


def load_table_arg(spec: str | None, random_seed: int = 0) -> tuple[Table, str]:
    """The table of a `--table` value: a build directory, a table file, a folder of the
    official pickles (verified against the package's sha256 manifest, converted once and
    cached; `unverified:DIR` accepts files the manifest does not know), or 'random'.

    Args:
        spec: the flag value.
        random_seed: seed of the 'random' demo table.

    Returns:
        (table, description for reports).

    Raises:
        ValueError: no value given; `TableError` (a ValueError) for a bad path or file.
    """
    if not spec:
        raise ValueError(f"--table is required. {TABLE_HELP}")
    if spec == "random":
        return random_table(random_seed), f"random_table({random_seed})"
    unverified = spec.startswith(UNVERIFIED_PREFIX)
    folder = spec[len(UNVERIFIED_PREFIX):] if unverified else spec
    if unverified or is_official_dir(folder):
        return load_official_dir(folder, allow_unknown=unverified), f"official data {folder}"
    return load_table(spec), str(spec)


def main_guard(main: Callable[[list[str]], object]) -> Callable[[list[str]], int]:
    """Wraps an absl `main`: user errors print `error: <message>` and exit with status 1.

    Args:
        main: the binary's main(argv).

    Returns:
        The wrapped main (returns main's status, 0 for None).
    """
    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int:
        try:
            status = main(argv)
        except (ValueError, FileNotFoundError, NotADirectoryError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0 if status is None else int(status)

    return wrapped
