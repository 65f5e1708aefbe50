"""Tests for nhb.bench.official_data: sha256 manifest verification, one conversion, the cache
and the `--table` resolution, on tables exported in the official format."""

import hashlib
import json

import numpy as np
import pytest

from nhb import bench
from nhb.bench import cli, official, official_data
from nhb.space import cells


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rep = cells.cell_tables().representative
    table = bench.random_table(1, rows=rep[[0, 5, 17, 300]], n_seeds=2)
    out = tmp_path_factory.mktemp("official")
    bench.export_official(table, out)
    return table, out


def _manifest(folder):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in official.FILES}


def _copy(src, dst):
    dst.mkdir()
    for n in official.FILES:
        (dst / n).write_bytes((src / n).read_bytes())
    return dst


def test_good_files_load_convert_once_and_come_from_the_cache(exported, tmp_path, monkeypatch):
    table, folder = exported
    data = _copy(folder, tmp_path / "data")
    manifest = _manifest(data)
    assert official_data.verify_official_dir(data, manifest) == manifest
    got = official_data.load_official_dir(data, manifest=manifest)
    order = np.argsort(cells.cell_tables().class_id[table.cells])
    np.testing.assert_array_equal(got.cells, table.cells[order])
    np.testing.assert_array_equal(got.metrics["valid_acc"], table.metrics["valid_acc"][order])
    assert got.meta["verified"] and got.meta["sha256"] == manifest
    cached = list((data / official_data.CACHE_DIR).glob("official_*.nhb"))
    assert len(cached) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(official_data, "import_official", no_conversion)
    again = official_data.load_official_dir(data, manifest=manifest)
    np.testing.assert_array_equal(again.metrics["test_acc"], got.metrics["test_acc"])


def test_a_corrupted_byte_is_refused_naming_file_and_digest(exported, tmp_path):
    _, folder = exported
    data = _copy(folder, tmp_path / "data")
    manifest = _manifest(data)
    raw = bytearray((data / "cellinfo.pkl").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (data / "cellinfo.pkl").write_bytes(bytes(raw))
    want = manifest["cellinfo.pkl"]
    with pytest.raises(official_data.OfficialDataError,
                       match=f"cellinfo.pkl.*differs from the manifest's {want}"):
        official_data.load_official_dir(data, manifest=manifest)
    assert not (data / official_data.CACHE_DIR).exists()


def test_a_missing_file_is_named(exported, tmp_path):
    _, folder = exported
    data = _copy(folder, tmp_path / "data")
    manifest = _manifest(data)
    (data / "avgaccs200.pkl").unlink()
    with pytest.raises(official_data.OfficialDataError,
                       match=f"avgaccs200.pkl is missing.*{manifest['avgaccs200.pkl']}"):
        official_data.load_official_dir(data, manifest=manifest)


def test_unknown_digests_need_consent_and_warn(exported, tmp_path):
    _, folder = exported
    data = _copy(folder, tmp_path / "data")
    unknown = dict.fromkeys(official.FILES)
    with pytest.raises(official_data.OfficialDataError, match="unverified:"):
        official_data.load_official_dir(data, manifest=unknown)
    with pytest.warns(UserWarning, match="bench12.pkl.*unverified"):
        got = official_data.load_official_dir(data, manifest=unknown, allow_unknown=True)
    assert not got.meta["verified"] and got.n_epochs == 12


def test_the_package_manifest_and_the_table_flag(exported, tmp_path):
    _, folder = exported
    shipped = official_data.read_manifest()
    assert set(shipped) == set(official.FILES)
    assert json.loads(official_data.MANIFEST.read_text())["files"].keys() == set(shipped)
    data = _copy(folder, tmp_path / "data")
    assert official_data.is_official_dir(data) and not official_data.is_official_dir(tmp_path)
    if any(v is None for v in shipped.values()):  # exported files are not the authors'
        with pytest.raises(official_data.OfficialDataError, match="unverified:"):
            cli.load_table_arg(str(data))
    with pytest.warns(UserWarning):
        got, desc = cli.load_table_arg(f"unverified:{data}")
    assert desc == f"official data {data}" and got.n_epochs == 12
