"""The normative baseline (`--model normative`) through the real `uad` entry points,
and training that leaves out a scan it cannot prepare and says why."""

import csv
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from uadcore.cli import main
from uadcore.io import read_manifest, write_manifest
from uadcore.models.normative import MIN_SPREAD, Normative


def test_fit_gives_the_median_and_a_robust_spread():
    rng = np.random.default_rng(0)
    items = torch.from_numpy(rng.normal(0.5, 0.1, (41, 1, 6, 5, 4)).astype(np.float32))
    items[0] = 9.0  # one wild scan moves neither statistic much
    model = Normative(in_shape=(6, 5, 4))
    model.fit(items, torch.ones_like(items, dtype=torch.bool))
    assert torch.allclose(model.median, items.median(dim=0, keepdim=True).values)
    assert float(model.spread.mean()) == pytest.approx(0.1, rel=0.3)
    assert float(model.spread.min()) >= MIN_SPREAD
    z = model.z_score(items[:2])
    assert float(z[0].abs().mean()) > 30 and float(z[1].abs().mean()) < 3
    losses = model.loss_per_sample(items[:2])
    assert losses.shape == (2,) and losses[0] > 10 * losses[1]


def test_near_z_forgives_a_voxel_of_misalignment_but_not_a_lesion():
    """A healthy boundary one voxel off the statistics' is abnormal to |z| and normal
    to near-z; a dark blob inside uniform tissue is abnormal to both."""
    shape = (12, 10, 8)
    healthy = torch.zeros((9, 1) + shape)
    healthy[:, :, :6] = 0.75  # white matter on one side of a boundary, 0.25 on the other
    healthy[:, :, 6:] = 0.25
    healthy += 0.02 * torch.randn(healthy.shape, generator=torch.Generator().manual_seed(0))
    model = Normative(in_shape=shape)
    model.fit(healthy, torch.ones_like(healthy, dtype=torch.bool))
    shifted = torch.full((1, 1) + shape, 0.25)
    shifted[:, :, :7] = 0.75  # the boundary a voxel further on
    assert float(model.z_score(shifted).abs()[0, 0, 6].min()) > 10  # the whole boundary plane
    near = model.near_z(shifted)
    assert near.shape == shifted.shape and float(near.max()) < 2
    assert torch.all(near <= model.z_score(shifted).abs() + 1e-6)  # its own voxel is one of the neighbours
    lesion = torch.full((1, 1) + shape, 0.75)
    lesion[:, :, 6:] = 0.25
    lesion[:, :, 1:4, 3:6, 2:5] = 0.45  # a dark 3x3x3 blob in the white matter
    assert float(model.near_z(lesion)[0, 0, 2, 4, 3]) > 5  # its centre: every neighbour's statistics say 0.75
    assert float(model.near_z(lesion)[0, 0, 8, 4, 3]) < 2  # the other side of the boundary: healthy


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr()


def test_normative_trains_removes_scores_and_evaluates(cohort, tmp_path, capsys):
    entries = read_manifest(cohort)
    train = write_manifest([e for e in entries if e.label == "healthy"] + [e for e in entries if e.label == "unhealthy"][:1],
                           str(tmp_path / "train.csv"))
    run = tmp_path / "run"
    code, out = _run(["train", "--data", train, "--model", "normative", "--out", str(run), "--val-fraction", "0", "--json"], capsys)
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["epochs"] == 25  # five fit-and-remove rounds
    with open(run / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 25 and float(history[0]["loss"]) > 0

    unhealthy = [e for e in entries if e.label == "unhealthy"][1]
    out_path = tmp_path / "z.nii.gz"
    code, out = _run(["score", str(run), unhealthy.path, "--map", "abs-z", "--out", str(out_path), "--json"], capsys)
    assert code == 0, out.err
    z = np.asarray(nib.load(out_path).dataobj)
    lesion = np.asarray(nib.load(unhealthy.mask).dataobj) > 0
    assert z.shape == lesion.shape
    # the map sits on the lesion: its values there are well above those elsewhere in the brain
    # (fitted on 4 scans of a cohort as variable as real scans: 1.8x here)
    brain = np.asarray(nib.load(unhealthy.path).dataobj) != 0
    assert np.median(z[lesion & brain]) > 1.5 * np.median(z[brain & ~lesion])

    test = write_manifest([e for e in entries if e.label == "unhealthy"][1:], str(tmp_path / "test.csv"))
    code, out = _run(["evaluate", str(run), "--data", test, "--map", "abs-z", "--json"], capsys)
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["voxel_auroc"] > 0.6  # 0.65 from 4 training scans of the realistic cohort; a broken map gives 0.5


def test_a_scan_that_cannot_be_prepared_is_left_out_and_listed(cohort, tmp_path, capsys):
    entries = read_manifest(cohort)
    blank = tmp_path / "input" / "blank.nii.gz"
    blank.parent.mkdir()
    shutil.copy(entries[0].path, blank)
    image = nib.load(blank)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), blank)
    from uadcore.io import ScanEntry

    manifest = write_manifest([e for e in entries if e.label == "healthy"] + [ScanEntry(str(blank), "healthy")],
                              str(tmp_path / "input" / "train.csv"))
    run = tmp_path / "run"
    code, out = _run(["train", "--data", manifest, "--model", "normative", "--out", str(run), "--val-fraction", "0",
                      "--epochs", "5", "--json"], capsys)
    assert code == 0, out.err
    assert json.loads(out.out)["excluded"] == 1
    code, out = _run(["outliers", str(run)], capsys)
    assert code == 0 and "blank.nii.gz" in out.out and "no nonzero voxels" in out.out
    assert sorted(os.listdir(blank.parent)) == ["blank.nii.gz", "train.csv"]  # nothing written into the input folder
