"""The on-disk cache of prepared scans: a second run reads them back memory-mapped
and identical; a changed file or another preset is a miss; it can be turned off."""

import os

import numpy as np

from uadcore.io import ScanEntry, read_manifest
from uadcore.preprocess import make_preset
from uadcore.preprocess import dataset as data


def entries_in(root):
    """The prepared scans stored under ``root`` (not the brain stage's ``brain/``)."""
    if not os.path.isdir(root):
        return []
    return sorted(name for part in os.listdir(root) if part != "brain" for name in os.listdir(os.path.join(root, part)))


def prepare_fresh(entries, preset):
    data.forget_prepared()  # a new process: only the disk cache remains
    return data.prepare_scans(entries, preset, workers=1, progress=False)


def test_a_second_run_reads_identical_prepared_scans_from_disk(tmp_path, monkeypatch, cohort):
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    entries = [e for e in read_manifest(cohort) if e.mask][:2]
    preset = make_preset("brain3d-behrendt")
    first = prepare_fresh(entries, preset)
    assert len(entries_in(tmp_path / "cache")) == 2
    again = prepare_fresh(entries, preset)
    for (a, mask_a), (b, mask_b) in zip(first, again):
        assert not isinstance(a.image, np.memmap) and isinstance(b.image, np.memmap)  # computed, then read back
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.region, b.region)
        np.testing.assert_array_equal(mask_a, mask_b)
        np.testing.assert_allclose(a.grid.affine, b.grid.affine)
        assert a.scan_grid.shape == b.scan_grid.shape
        np.testing.assert_array_equal(a.to_scan(a.image), b.to_scan(b.image))
        np.testing.assert_array_equal(a.to_template, b.to_template)  # the registration comes back too
        assert a.quality == b.quality and a.quality["registration_correlation"] > 0.5


def test_a_changed_file_or_another_preset_is_a_miss(tmp_path, monkeypatch, cohort):
    import shutil

    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    source = read_manifest(cohort)[0].path
    copy = tmp_path / "scan.nii.gz"
    shutil.copy(source, copy)
    entry = [ScanEntry(str(copy))]
    prepare_fresh(entry, make_preset("brain3d-behrendt"))
    prepare_fresh(entry, make_preset("brain2d-slices"))
    assert len(entries_in(tmp_path / "cache")) == 2
    other = read_manifest(cohort)[1].path
    shutil.copy(other, copy)  # same path, new content
    (changed, _), = prepare_fresh(entry, make_preset("brain3d-behrendt"))
    assert not isinstance(changed.image, np.memmap) and len(entries_in(tmp_path / "cache")) == 3


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch, cohort):
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UAD_CACHE", "off")
    prepare_fresh(read_manifest(cohort)[:1], make_preset("brain3d-behrendt"))
    assert not (tmp_path / "cache").exists()


def test_shards_prepared_in_parallel_processes_are_what_training_reads(tmp_path, cohort):
    # two `uad prepare` jobs at once, one told its shard by a SLURM array's variables,
    # the other by --shard; then `uad train` finds every scan in the cache
    import subprocess
    import sys

    from uadcore.cli.prepare import shard_of

    cache = tmp_path / "cache"
    env = {**os.environ, "UAD_CACHE_DIR": str(cache)}
    slurm = {**env, "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "2"}  # the second of 2
    command = [sys.executable, "-m", "uadcore", "prepare", cohort, "--model", "normative", "--workers", "1", "--json"]
    jobs = [subprocess.Popen(command + ["--shard", "1/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            subprocess.Popen(command, env=slurm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    summaries = []
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err
        summaries.append(__import__("json").loads(out))
    n = len(read_manifest(cohort))
    assert [s["shard"] for s in summaries] == ["1/2", "2/2"] and [s["scans"] for s in summaries] == [(n + 1) // 2, n // 2]
    prepared = {name: os.stat(os.path.join(cache, name[:2], name)).st_mtime_ns for name in entries_in(cache)}
    assert len(prepared) == n  # disjoint shards that cover the data
    # training must read them and prepare nothing: the brain stage's own cache,
    # removed now, would come back with anything prepared again
    import shutil

    shutil.rmtree(cache / "brain")
    done = subprocess.run([sys.executable, "-m", "uadcore", "train", "--data", cohort, "--model", "normative", "--epochs", "1",
                           "--val-fraction", "0", "--workers", "1", "--out", str(tmp_path / "run"), "--json"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (cache / "brain").exists()
    assert {name: os.stat(os.path.join(cache, name[:2], name)).st_mtime_ns for name in entries_in(cache)} == prepared
    assert shard_of(None, {"RANK": "2", "WORLD_SIZE": "4"}) == (3, 4) and shard_of(None, {}) == (1, 1)


def test_a_bad_shard_is_refused():
    import pytest

    from uadcore.cli.prepare import shard_of
    from uadcore.errors import UADError

    for text in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(UADError, match="--shard"):
            shard_of(text)


def _entry_folders(root):
    """Every entry folder under ``root``: the prepared scans' and the brain stage's."""
    return sorted(os.path.join(dirpath, name) for dirpath, names, _ in os.walk(root) for name in names
                  if os.path.isfile(os.path.join(dirpath, name, "meta.json")))


def test_a_damaged_entry_is_prepared_again_and_replaced_with_one_warning(tmp_path, monkeypatch, cohort, capsys):
    import json
    import warnings

    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    entries = [e for e in read_manifest(cohort) if e.mask][:1]
    preset = make_preset("brain3d-behrendt")
    (first, _), = prepare_fresh(entries, preset)
    folders = _entry_folders(tmp_path / "cache")
    scan_entry = next(f for f in folders if f"{os.sep}brain{os.sep}" not in f)
    brain_entry = next(f for f in folders if f"{os.sep}brain{os.sep}" in f and "-warp-" not in f)

    def damage_image(folder):  # random values in place of the prepared scan (same shape and type)
        image = np.load(os.path.join(folder, "image.npy"), mmap_mode="r+")
        image[...] = np.random.default_rng(0).random(image.shape)
        image.flush()

    def shift_registration(folder):  # the brain stage's registration moved 30 mm
        meta = json.load(open(os.path.join(folder, "meta.json")))
        meta["to_template"][0][3] += 30.0
        json.dump(meta, open(os.path.join(folder, "meta.json"), "w"))

    def truncate(folder):
        path = os.path.join(folder, "image.npy")
        os.truncate(path, os.path.getsize(path) // 2)

    for folder, damage in ((scan_entry, damage_image), (brain_entry, shift_registration), (scan_entry, truncate)):
        damage(folder)
        if folder == brain_entry:  # reached only through a scan that is not in the cache
            import shutil
            shutil.rmtree(scan_entry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (again, _), = prepare_fresh(entries, preset)
        said = [str(w.message) for w in caught if "damaged" in str(w.message)]
        assert len(said) == 1 and os.path.basename(folder) in said[0], said
        assert not isinstance(again.image, np.memmap)  # prepared again, not the damaged values
        # equal up to ITK's multithreaded sums: preparing a scan again differs in the 5th digit, and
        # voxels on the brain's edge may fall the other way (up to 57 of 325k seen, 1.8e-4 of them, in a
        # clean CI run); the damage changed every voxel, so 1 % still tells the two apart by far
        assert np.mean(np.abs(again.image - first.image) > 1e-3) < 1e-2
        np.testing.assert_allclose(again.to_template, first.to_template, atol=0.05)  # mm: not the 30 mm shift
        with warnings.catch_warnings(record=True) as caught:  # and stored again: read back intact, silently
            warnings.simplefilter("always")
            (read_back, _), = prepare_fresh(entries, preset)
        assert isinstance(read_back.image, np.memmap) and not [w for w in caught if "damaged" in str(w.message)]
        np.testing.assert_array_equal(read_back.image, again.image)
