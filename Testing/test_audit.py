"""`uad audit`: every scan of a training set scored by a model that never saw it,
ranked, the scans with lesions among healthy ones first."""

import csv
import json
import os

import numpy as np
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


@pytest.fixture(scope="module")
def audited(tmp_path_factory, contaminated):
    """`uad audit --folds 3 --maps --json` of the contaminated set: (its folder, its JSON)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("audited") / "audit"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["audit", contaminated, "--out", str(out), "--folds", "3", "--maps", "--json"]) == 0
    return out, json.loads(printed.getvalue())


def test_an_audit_ranks_the_scans_with_lesions_first_each_scored_out_of_fold(contaminated, audited):
    data = contaminated
    entries = read_manifest(data)
    out, result = audited
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
    # the scans with tumours come first: the clearer one at the top, the fainter (a sixth of its score) among
    # the top 4 of 22 (second or third, by the map: abs-z, near-z)
    ranking = [(r["rank"], r["label"], r["score"]) for r in rows]
    assert rows[0]["label"] == "unhealthy" and "unhealthy" in {r["label"] for r in rows[1:4]}, ranking
    assert result["unhealthy"] == 2 and result["unhealthy_in_top_k"] >= 1 and result["auroc"] > 0.9
    assert float(rows[0]["percentile_in_set"]) == 100.0
    # each map, on its scan's grid, peaks where the row says (the row's peak is the model grid's highest voxel
    # carried to the scan as a point: within a model voxel's diagonal, 4.3 mm, of the resampled map's highest voxel)
    top = rows[0]
    scan_map, scan = read_scan(top["map"]), read_scan(top["path"])
    assert scan_map.grid.matches(scan.grid)
    peak = scan_map.grid.index_to_world([list(divmod_index(scan_map.array.argmax(), scan_map.array.shape))])[0]
    assert np.linalg.norm(peak - np.array([float(v) for v in top["peak_ras_mm"].split()])) <= 2.5 * np.sqrt(3)
    assert float(top["region_ml"]) > 0
    # ranked by normative's audit map, which forgives a voxel of misalignment, as audit.json says, with every scan
    # prepared with the deformable registration: the folds' runs were trained on it, and score with it
    about = json.loads((out / "audit.json").read_text())
    assert about["map"] == "near-z" and about["registration"] == "deformable"
    for fold in (1, 2, 3):
        assert json.loads((out / "folds" / f"fold-{fold}" / "config.json").read_text())["preset_params"]["registration"] == "deformable"


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
    assert main(["audit", data, "--out", str(tmp_path / "kind"), "--map", "probability"]) == 2
    assert "map 'probability': model normative offers abs-z, near-z, z, rec" in capsys.readouterr().err
    assert not (tmp_path / "kind").exists()
    with pytest.raises(SystemExit) as refused:  # argparse: one line naming the choices, exit 2
        main(["audit", data, "--out", str(tmp_path / "warp"), "--registration", "rigid"])
    assert refused.value.code == 2 and "choose from 'affine', 'deformable'" in capsys.readouterr().err
    assert not (tmp_path / "warp").exists()


def test_an_audit_prepares_with_the_registration_asked_for(tmp_path, capsys, small_cohort):
    """`--registration affine`: the scans are prepared (and the folds trained) as `uad train`'s default prepares them."""
    data = write_manifest(small_cohort, str(tmp_path / "training.csv"))
    assert main(["audit", data, "--out", str(tmp_path / "audit"), "--registration", "affine", "--folds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["registration"] == "affine"
    assert json.loads((tmp_path / "audit" / "folds" / "fold-1" / "config.json").read_text())["preset_params"] == {"registration": "affine"}
    assert result["scans"] == len(small_cohort) and len([r for r in result["rows"] if "problem" not in r]) == len(small_cohort)


def test_a_scan_stands_out_by_a_lesion_of_any_size():
    """The audit's sample score looks at three volumes of a calibrated map: a scan
    with a small bright blob (a few voxels, 0.03 % of the brain) and one with a
    large faint region (1 %) both rank above every healthy scan, where a single
    share (1 %, 0.2 % or 0.05 %) misses one of them; a typical scan scores about 1 (multiples of the set's
    median), and a few contaminated scans do not move that reference."""
    from uadcore.score.out_of_fold import relative_to_set, sample_scores

    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    # |z|-like noise, each scan's a little louder or quieter than the next (as real scans' are)
    healthy = [np.abs(rng.standard_normal(shape)) * rng.uniform(0.9, 1.1) for _ in range(20)]
    small, large = healthy[-2:]
    small[10:13, 10:13, 10:12] = 8.0  # 18 voxels, 0.03 % of the volume, far above any healthy voxel
    large.reshape(-1)[rng.choice(large.size, 640, replace=False)] = 3.6  # 1 %, raised to a healthy scan's loudest
    maps, insides = healthy, np.ones((20, *shape), bool)

    scores = sample_scores(maps, insides)
    assert set(np.argsort(-scores)[:2]) == {18, 19}
    assert np.median(scores[:18]) == pytest.approx(1.0, abs=0.1)
    for one_share in (0.01, 0.002, 0.0005):  # the blob lost among 640 voxels; both just healthy; the region's top is noise
        assert set(np.argsort(-sample_scores(maps, insides, fractions=(one_share,)))[:2]) != {18, 19}
    assert relative_to_set(np.array([1.0, 2.0, 2.0, 3.0, 50.0])) == pytest.approx([0.5, 1.0, 1.0, 1.5, 25.0])
    assert list(relative_to_set(np.zeros(3))) == [0.0, 0.0, 0.0]


def test_the_audit_in_memory_gives_the_scores_of_uad_audit(contaminated, audited):
    """`normative_scores` (what removal by the audit uses inside a run) is the audit
    of `uad audit --model normative` without its run folders: the same scores."""
    from uadcore.audit import AuditPlan
    from uadcore.score.out_of_fold import normative_scores, read_audit_csv
    from uadcore.models import MODELS
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_set

    out, _ = audited
    spec = MODELS["normative"]
    # prepared as the audit prepares them (its registration); a run's removal by the audit uses the run's
    prepared = prepare_set(read_manifest(contaminated), make_preset(spec.preset, **spec.preset_options(AuditPlan().preset_params())),
                           workers=1, progress=False)
    scores = normative_scores(prepared.items, prepared.regions, folds=3, seed=0)
    by_path = {row["path"]: row["score"] for row in read_audit_csv(str(out / "audit.csv"))}
    assert list(scores) == pytest.approx([by_path[e.path] for e in prepared.entries], rel=1e-4)


def test_a_run_removes_by_the_audit_before_training_and_shows_its_ranking(tmp_path, capsys, contaminated):
    from uadcore.score.out_of_fold import read_audit_csv
    from uadcore.io.checkpoint import load_run

    run = tmp_path / "run"
    assert main(["train", "--data", contaminated, "--out", str(run), "--model", "normative", "--removal-score", "audit",
                 "--gamma", "1.4", "--epochs", "5", "--val-fraction", "0", "--workers", "1"]) == 0
    capsys.readouterr()
    ranking = read_audit_csv(str(run / "audit.csv"))
    assert len(ranking) == 22 and [r["rank"] for r in ranking] == list(range(1, 23))
    mean = sum(r["score"] for r in ranking) / len(ranking)
    above = {r["path"] for r in ranking if r["score"] > 1.4 * mean}
    state = load_run(str(run))
    removed = {row["path"] for row in state["audit"]}
    assert removed == above and ranking[0]["label"] == "unhealthy" and ranking[0]["path"] in removed
    assert all(row["epoch"] == 0 and row["score"] == "audit" for row in state["audit"])
    assert {e.path for e in read_manifest(str(run / "kept.csv"))} == {e.path for e in read_manifest(contaminated)} - removed
    # `uad outliers` shows the ranking and the removal; --json carries both
    assert main(["outliers", str(run)]) == 0
    shown = "".join(capsys.readouterr())
    assert ranking[0]["path"] in shown and f"{len(removed)} of 22 training scans removed before training" in shown
    assert main(["outliers", str(run), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["removal_score"] == "audit" and [r["path"] for r in payload["audit"]] == [r["path"] for r in ranking]
    # too few training scans for the folds: exit 2 before any folder is made
    few = write_manifest(read_manifest(contaminated)[:8], str(tmp_path / "few.csv"))
    assert main(["train", "--data", few, "--out", str(tmp_path / "few"), "--model", "normative", "--removal-score", "audit",
                 "--val-fraction", "0"]) == 2
    assert "needs at least 10 training scans" in capsys.readouterr().err and not (tmp_path / "few").exists()


def test_uad_outliers_lists_an_audit_folder(capsys, audited):
    out, result = audited
    assert main(["outliers", str(out), "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert result["rows"][0]["path"] in shown and result["rows"][3]["path"] not in shown
    assert main(["outliers", str(out), "--export-kept", str(out.parent / "kept.csv")]) == 2
    assert "an audit removes nothing" in capsys.readouterr().err


def test_a_review_of_an_audit_exports_the_kept_scans_and_every_decision(tmp_path, audited, contaminated):
    from uadcore.review import decide, decisions_path, export, load_review

    out, result = audited
    rows = load_review(str(out))
    assert [r["path"] for r in rows] == [r["path"] for r in result["rows"]]  # the audit's ranking
    assert all(r["decision"] == "keep" and os.path.isfile(r["map"]) and len(r["peak_ras_mm"]) == 3 for r in rows)
    decide(rows[0], "exclude", "  a mass, left frontal  ", reviewer="dr-a")
    decide(rows[1], "exclude", "motion", reviewer="dr-b")
    decide(rows[2], "keep", "a normal variant")
    manifest, decisions = export(str(out), rows, str(tmp_path / "curated.csv"))
    assert decisions == decisions_path(manifest) == str(tmp_path / "curated-decisions.csv")
    assert [e.path for e in read_manifest(manifest)] == [e.path for e in read_manifest(contaminated)
                                                         if e.path not in {rows[0]["path"], rows[1]["path"]}]
    with open(decisions, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [w["path"] for w in written] == [r["path"] for r in rows]
    assert written[0]["decision"] == "exclude" and written[0]["reason"] == "a mass, left frontal" and written[0]["reviewer"] == "dr-a"
    assert written[0]["rank"] == "1" and written[0]["scored_by"] == "audit" and written[0]["decided_at"].endswith("+00:00")
    assert written[2]["reviewer"] and written[3]["reviewer"] == "" and written[3]["decision"] == "keep"  # not reviewed
    # never over what it wrote without being asked, never over an input
    with pytest.raises(Exception, match="exists"):
        export(str(out), rows, manifest)
    assert export(str(out), rows, manifest, force=True) == (manifest, decisions)
    with pytest.raises(Exception, match="input"):
        export(str(out), rows, contaminated, force=True)
    with pytest.raises(ValueError, match="decision must be"):
        decide(rows[0], "maybe")


def test_a_review_of_a_run_starts_from_what_training_removed(tmp_path, contaminated):
    from uadcore.io.checkpoint import load_run
    from uadcore.review import export, load_review

    run = tmp_path / "run"
    assert main(["train", "--data", contaminated, "--out", str(run), "--model", "normative", "--removal-score", "audit",
                 "--epochs", "1", "--val-fraction", "0.3", "--workers", "1"]) in (0,)
    rows = load_review(str(run))
    state = load_run(str(run))
    assert sorted(r["path"] for r in rows) == sorted(e["path"] for e in state["train_entries"])
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1)) and rows[0]["scored_by"] == "audit"
    removed = {row["path"] for row in state["audit"]}
    assert removed and {r["path"] for r in rows if r["decision"] == "exclude"} == removed
    assert all(r["removed"] == "before training" for r in rows if r["path"] in removed)
    manifest, _ = export(str(run), rows, str(tmp_path / "curated.csv"))
    validation = [e["path"] for e in state["validation"]["entries"]]
    assert validation and set(validation) <= {e.path for e in read_manifest(manifest)}
    assert not removed & {e.path for e in read_manifest(manifest)}
