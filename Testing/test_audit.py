"""`uad audit`: every scan of a training set scored by a model that never saw it,
ranked, the scans with lesions among healthy ones first."""

import csv
import json
import os

import pytest

from uadcore.cli import main
from uadcore.io import read_manifest, read_scan, write_manifest


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    """A training set of 20 healthy scans and 2 with tumours (labelled unhealthy): a
    manifest path."""
    from uadcore.synth import synthesize_cohort

    base = tmp_path_factory.mktemp("audit")
    return synthesize_cohort(str(base / "cohort"), healthy=20, unhealthy=2, seed=3, workers=2, progress=False,
                             lesion_kinds=("tumour",))


def test_an_audit_ranks_the_scans_with_lesions_first_each_scored_out_of_fold(tmp_path, capsys, contaminated):
    data = contaminated
    entries = read_manifest(data)
    out = tmp_path / "audit"
    assert main(["audit", data, "--out", str(out), "--folds", "3", "--maps", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    with open(out / "audit.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in rows) == sorted(e.path for e in entries)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    # no scan was scored by a run that trained (or calibrated) on it
    for row in rows:
        trained_on = {e.path for e in read_manifest(str(out / "folds" / f"fold-{row['fold']}-train.csv"))}
        assert row["path"] not in trained_on and row["run"] == str(out / "folds" / f"fold-{row['fold']}")
    assert {r["fold"] for r in rows} == {"1", "2", "3"}
    # the two scans with tumours come first
    assert {r["label"] for r in rows[:2]} == {"unhealthy"}, [(r["rank"], r["label"], r["score"]) for r in rows]
    assert result["unhealthy"] == 2 and result["unhealthy_in_top_k"] == 2 and result["auroc"] == 1.0
    assert float(rows[0]["percentile_in_set"]) == 100.0
    # each map, on its scan's grid, peaks where the row says
    top = rows[0]
    scan_map, scan = read_scan(top["map"]), read_scan(top["path"])
    assert scan_map.grid.matches(scan.grid)
    peak = scan_map.grid.index_to_world([list(divmod_index(scan_map.array.argmax(), scan_map.array.shape))])[0]
    assert [round(float(v), 1) for v in peak] == [float(v) for v in top["peak_ras_mm"].split()]
    assert float(top["region_ml"]) > 0


def divmod_index(flat, shape):
    import numpy as np

    return np.unravel_index(int(flat), shape)


def test_an_audit_never_writes_into_its_data_or_over_a_folder_in_use(tmp_path, capsys, small_cohort):
    data = write_manifest(small_cohort, str(tmp_path / "training.csv"))
    inside = os.path.join(os.path.dirname(small_cohort[0].path), "audit")
    assert main(["audit", data, "--out", inside]) == 2
    assert "lies inside the input folder" in capsys.readouterr().err and not os.path.exists(inside)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["audit", data, "--out", str(tmp_path / "used")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["audit", data, "--out", str(tmp_path / "few"), "--folds", "6"]) == 2  # 11 scans
    assert "needs at least 12" in capsys.readouterr().err
    assert not (tmp_path / "few").exists()
