"""The synthetic cohort: deterministic, varied, with exact lesion masks."""

import json
import os

import numpy as np

from uadcore.io import orientation_code, read_manifest, read_mask, read_scan
from uadcore.synth import DEFAULT_LESION_KINDS, LESION_KINDS, load_template, make_subject, synthesize_cohort


def test_cohort_layout_and_manifest(cohort):
    entries = read_manifest(cohort)
    assert [e.label for e in entries] == ["healthy"] * 3 + ["unhealthy"] * 3
    for entry in entries:
        assert (entry.mask is None) == (entry.label == "healthy")
        assert os.path.dirname(entry.path).endswith(entry.label)
    record = json.load(open(os.path.join(os.path.dirname(cohort), "subjects.json")))
    assert sorted(s["lesion"] for s in record["subjects"] if s["lesion"]) == sorted(DEFAULT_LESION_KINDS)


def test_lesion_masks_are_exact_and_inside_the_brain(cohort):
    for entry in read_manifest(cohort):
        if entry.mask is None:
            continue
        scan = read_scan(entry.path, need_3d=True)
        mask = read_mask(entry.mask, scan)  # also checks the mask's geometry
        assert mask.sum() > 10
        assert (scan.array[mask] > 0).mean() > 0.99  # lesions lie in the brain (rare Rician zeros aside)
        assert np.median(scan.array[mask]) != np.median(scan.array[scan.array > 0])


def test_same_seed_same_subject_whatever_the_process_count(tmp_path):
    one = synthesize_cohort(str(tmp_path / "one"), healthy=1, unhealthy=2, seed=3, workers=1, progress=False)
    two = synthesize_cohort(str(tmp_path / "two"), healthy=1, unhealthy=2, seed=3, workers=2, progress=False)
    for a, b in zip(read_manifest(one), read_manifest(two)):
        first, second = read_scan(a.path), read_scan(b.path)
        assert first.grid.matches(second.grid)
        assert np.array_equal(first.array, second.array)


def test_another_seed_gives_another_subject():
    template = load_template()
    a, b = make_subject(template, 0, 1, None), make_subject(template, 1, 1, None)
    assert a.grid.shape != b.grid.shape or not np.array_equal(a.image, b.image)


def test_subjects_vary_in_orientation_spacing_and_contrast():
    template = load_template()
    subjects = [make_subject(template, 11, index, None) for index in range(1, 9)]
    assert len({orientation_code(s.grid.direction) for s in subjects}) >= 3
    assert len({tuple(np.round(s.grid.spacing, 2)) for s in subjects}) >= 2
    assert len({s.info["contrast_gamma"] for s in subjects}) >= 6
    for subject in subjects:
        assert subject.image.dtype == np.int16 and subject.image.max() > 0
        assert subject.image[0, 0, 0] == 0  # skull-stripped: background is exactly 0


def test_every_lesion_kind_changes_what_its_mask_covers():
    template = load_template()
    for kind in LESION_KINDS:
        subject = make_subject(template, 5, 100, kind)
        twin = make_subject(template, 5, 100, None)  # the same subject without the lesion
        assert subject.grid.matches(twin.grid)
        assert subject.mask.any() and subject.info["lesion_volume_ml"] > 0
        changed = subject.image != twin.image
        assert not (changed & ~subject.mask).any(), kind  # nothing outside the mask
        assert changed[subject.mask].mean() > 0.9, kind
