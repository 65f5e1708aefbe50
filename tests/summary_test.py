"""Tests for nhb.space.summary and the experiments/nhb2_space.py binary."""

import json

import numpy as np
from PIL import Image

from nhb._vendor import load_npz
from nhb.models.cell_net import reference_param_count
from nhb.space import summary

OFFICIAL = load_npz("nashpobench2/nashpobench2_cells_split.npz")


def test_space_summary_figures(tmp_path):
    info = summary.space_summary()
    assert info["num_cells"] == 4096 and info["num_classes"] == 1011
    assert info["num_configs"] == 196_608 and info["num_disconnected"] == 169
    assert sum(info["class_size_histogram"].values()) == 1011
    assert sum(s * c for s, c in info["class_size_histogram"].items()) == 4096
    sizes, counts = np.unique(OFFICIAL["unique_class_size"], return_counts=True)
    assert info["class_size_histogram"] == dict(zip(sizes.tolist(), counts.tolist(),
                                                    strict=True))
    assert sum(info["group_counts"]["cells"].values()) == 4096
    assert sum(info["group_counts"]["classes"].values()) == 1011
    expect_rep = OFFICIAL["unique_cellcodes"][OFFICIAL["cell_to_unique"]]
    assert info["representative"] == list(expect_rep)
    assert list(info["param_counts"]) == list(OFFICIAL["unique_cellcodes"])
    # Parameter counts from the Linen model equal the closed form for all 1011 classes.
    for code, n in info["param_counts"].items():
        assert n == reference_param_count(code), code
    assert info["param_counts"]["0|00|000"] == 1_531_850
    assert info["param_count_range"] == [min(info["param_counts"].values()), 1_531_850]
    path = tmp_path / "space.json"
    summary.write_json(info, path)
    loaded = json.loads(path.read_text())
    assert loaded["num_classes"] == 1011 and len(loaded["representative"]) == 4096
    text = summary.format_summary(info)
    assert "1011" in text and "1,531,850" in text
    summary.plot(info, tmp_path / "space.png")
    with Image.open(tmp_path / "space.png") as png:  # a 10 x 3.5 inch figure at 120 dpi
        assert png.format == "PNG" and png.size == (1200, 420)
        assert len(png.convert("L").getcolors(maxcolors=1 << 16)) > 10  # not blank
    assert not list(tmp_path.glob("*.tmp"))


def test_zero_conv_cell_has_no_cell_parameters():
    # All-zero / pool / skip cells share the minimum: stem + reductions + head only.
    assert reference_param_count("3|33|333") == reference_param_count("1|21|123") == 73_610
    assert np.diff([reference_param_count("0" * k + "3" * (6 - k)) for k in range(7)]).min() > 0
