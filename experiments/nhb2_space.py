r"""Prints a summary of the NAS-HPO-Bench-II search space and optionally writes it as JSON.

    python experiments/nhb2_space.py [--output_json=PATH] [--plot=PATH.png]

The summary: 4096 cells, 1011 equivalence classes (our canonicalisation, checked against the
official representatives), the class-size histogram, the architecture groups (paper §4.3), and
the parameter count of every representative at the default network size.
"""

from __future__ import annotations

from absl import app, flags

from nhb.space import summary

_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the summary as JSON here.")
_PLOT = flags.DEFINE_string("plot", None, "Write a class-size / parameter-count figure here.")


def main(argv: list[str]) -> None:
    del argv
    info = summary.space_summary()
    print(summary.format_summary(info))
    if _OUTPUT_JSON.value:
        summary.write_json(info, _OUTPUT_JSON.value)
        print(f"wrote {_OUTPUT_JSON.value}")
    if _PLOT.value:
        summary.plot(info, _PLOT.value)
        print(f"wrote {_PLOT.value}")


if __name__ == "__main__":
    app.run(main)
