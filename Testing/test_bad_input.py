"""Every kind of bad input: exit code 2, one line on stderr naming the file, and
nothing written into the input folder."""

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from uadcore.cli import main
from uadcore.io import write_nifti
from volumes import marker_volume


def folder_state(folder):
    """Every file under ``folder`` with its size and modification time."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            state[path] = (os.path.getsize(path), os.path.getmtime(path))
    return state


def run_check(capsys, data, *options):
    """`uad check DATA` in this process; returns (exit code, stderr lines)."""
    code = main(["check", str(data), *options])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def assert_rejected(capsys, data, named, reason, *options):
    before = folder_state(os.path.dirname(str(data)) if os.path.isfile(str(data)) else str(data))
    code, lines = run_check(capsys, data, *options)
    assert code == 2
    assert len(lines) == 1, lines
    assert str(named) in lines[0] and reason in lines[0], lines[0]
    assert folder_state(os.path.dirname(str(data)) if os.path.isfile(str(data)) else str(data)) == before


def good_scan(folder, name="good.nii.gz", orientation="RAS"):
    array, grid, _ = marker_volume(orientation, shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    return write_nifti(array, grid, os.path.join(folder, name))


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "noise.nii.gz"
    bad.write_bytes(os.urandom(2000))
    assert_rejected(capsys, tmp_path, bad, "cannot read")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_truncated_file(tmp_path, capsys, suffix):
    from volumes import write_itk

    array, grid, _ = marker_volume("RAS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    whole = str(tmp_path / f"whole{suffix}")
    write_nifti(array, grid, whole) if suffix.startswith(".nii") else write_itk(array, grid, whole)
    content = open(whole, "rb").read()
    os.remove(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(content[: len(content) // 2])
    assert_rejected(capsys, tmp_path, cut, "cannot read")


def test_4d_file(tmp_path, capsys):
    path = tmp_path / "fmri.nii.gz"
    nib.Nifti1Image(np.ones((8, 8, 8, 5), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "is 4D")


def test_2d_image_where_3d_is_needed(tmp_path, capsys):
    path = tmp_path / "slice.nii.gz"
    nib.Nifti1Image(np.ones((64, 64), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "is 2D", "--preset", "brain3d-behrendt")


def test_a_2d_image_is_fine_for_patches(tmp_path, capsys):
    path = tmp_path / "film.nii.gz"
    nib.Nifti1Image(np.random.default_rng(0).random((200, 150)).astype(np.float32), np.eye(4)).to_filename(str(path))
    code, _ = run_check(capsys, tmp_path, "--preset", "patches2d")
    assert code == 0


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf_voxels(tmp_path, capsys, bad_value):
    array = np.ones((10, 10, 10), np.float32)
    array[3, 4, 5] = bad_value
    path = tmp_path / "broken.nii.gz"
    nib.Nifti1Image(array, np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "NaN or infinite")


def test_empty_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scans here")
    assert_rejected(capsys, empty, empty, "no scans found")


def test_manifest_with_a_missing_file(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,healthy,\ngone.nii.gz,healthy,\n")
    assert_rejected(capsys, manifest, manifest, "line 3: scan not found")
    code, lines = run_check(capsys, manifest)
    assert "gone.nii.gz" in lines[0]


def test_manifest_with_a_missing_mask(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,unhealthy,gone_mask.nii.gz\n")
    assert_rejected(capsys, manifest, "gone_mask.nii.gz", "mask not found")


def test_manifest_with_an_unknown_label(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,sick,\n")
    assert_rejected(capsys, manifest, manifest, "unknown label 'sick'")


def test_manifest_without_a_path_column(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,label\ngood.nii.gz,healthy\n")
    assert_rejected(capsys, manifest, manifest, "no 'path' column")


def test_mask_whose_geometry_does_not_match_its_scan(tmp_path, capsys):
    good_scan(str(tmp_path))
    array, grid, _ = marker_volume("LPS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    write_nifti((array > 500).astype(np.uint8), grid, str(tmp_path / "mask.nii.gz"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,unhealthy,mask.nii.gz\n")
    assert_rejected(capsys, manifest, tmp_path / "mask.nii.gz", "does not match its scan")
    assert_rejected(capsys, manifest, tmp_path / "mask.nii.gz", "axes LPS instead of RAS")


def test_a_mask_on_a_shifted_grid_says_by_how_much(tmp_path, capsys):
    good_scan(str(tmp_path))
    array, grid, _ = marker_volume("RAS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    shifted = grid.affine.copy()
    shifted[:3, 3] += (0.0, 2.0, 0.0)
    from uadcore.io import Grid

    write_nifti((array > 500).astype(np.uint8), Grid(grid.shape, shifted), str(tmp_path / "mask.nii.gz"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,unhealthy,mask.nii.gz\n")
    assert_rejected(capsys, manifest, tmp_path / "mask.nii.gz", "the same voxel size and axes, shifted by 2 mm")


def test_a_scan_that_is_all_zero(tmp_path, capsys):
    path = tmp_path / "blank.nii.gz"
    nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "no nonzero voxels")


def test_no_such_data(tmp_path, capsys):
    code, lines = run_check(capsys, tmp_path / "elsewhere")
    assert code == 2 and "elsewhere: no such folder or manifest" in lines[0]


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "noise.nii"
    bad.write_bytes(b"\0" * 100)
    result = subprocess.run([sys.executable, "-m", "uadcore", "check", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code = main(["synth", str(tmp_path), "--healthy", "1", "--unhealthy", "0"])
    assert code == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_check_writes_nothing_into_a_good_cohort(cohort, capsys):
    before = folder_state(os.path.dirname(cohort))
    code, _ = run_check(capsys, cohort)
    assert code == 0
    assert folder_state(os.path.dirname(cohort)) == before


# ---- settings, divergence, removal that would empty the run, strict JSON -----------

def _tiny_settings(tmp_path, **values):
    import json

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model_params": {"channels": [2, 4, 8, 16], "latent": 16}, "epochs": 2, "batch_size": 2,
                                "reinit_at": [], "val_fraction": 0.0, "workers": 1, **values}))
    return str(path)


@pytest.mark.parametrize("values, reason", [
    ({"epochs": "5"}, 'epochs must be a whole number (got "5")'),
    ({"gamma": 1e-9}, "gamma must be a number >= 1"),
    ({"lr": 1e400}, "lr must be a number > 0 (got inf)"),
    ({"reinit_at": ["ten"]}, "reinit_at must be a list of whole numbers"),
])
def test_a_setting_of_the_wrong_type_or_range_is_exit_2_naming_the_file(tmp_path, capsys, cohort, values, reason):
    settings = _tiny_settings(tmp_path, **values)
    code = main(["train", "--data", cohort, "--config", settings, "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and settings in lines[0] and reason in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_gamma_inf_on_the_command_line_is_refused(tmp_path, capsys, cohort):
    assert main(["train", "--data", cohort, "--gamma", "inf", "--out", str(tmp_path / "run")]) == 2
    assert "gamma must be a number >= 1 (got inf)" in capsys.readouterr().err


def test_a_diverging_run_stops_with_a_clear_error(tmp_path, capsys, cohort):
    settings = _tiny_settings(tmp_path, lr=1e30, epochs=3)
    assert main(["train", "--data", cohort, "--config", settings, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the weights diverged; start a new run with a lower --lr" in error and "at learning rate 1e+30" in error


def test_outlier_removal_never_leaves_fewer_than_a_quarter_of_the_scans(tmp_path, cohort):
    from uadcore.errors import UADWarning
    from uadcore.train import TrainConfig, train

    config = TrainConfig.from_dict({"data": cohort, "model_params": {"channels": [2, 4, 8, 16], "latent": 16}, "epochs": 5,
                                    "batch_size": 2, "reinit_at": [], "val_fraction": 0.0, "workers": 1, "gamma": 1.0,
                                    "outlier_every": 1, "removal_start": "paper"})
    with pytest.warns(UADWarning, match=r"outlier removal would keep only \d of the 6 training scans \(under 25%\)"):
        summary = train(config, str(tmp_path / "run"))
    assert summary["kept"] >= 2


def test_json_output_is_strict_even_for_nan():
    import json
    import math

    from uadcore.io.strict_json import strict_json

    text = strict_json({"score": math.nan, "scores": [1.0, math.inf], "nested": {"x": -math.inf}})
    assert text == '{"score":null,"scores":[1.0,null],"nested":{"x":null}}'
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))


# ---- headers that lie, masks given as scans ------------------------------------------

def _nifti(path, array, affine=None, **header_fields):
    image = nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    for name, value in header_fields.items():
        image.header[name] = value
    image.to_filename(str(path))
    return path


def _brainish(shape=(20, 20, 20)):
    return np.random.default_rng(0).uniform(10, 100, shape).astype(np.float32)


def test_a_header_claiming_far_more_voxels_than_the_file_holds(tmp_path, capsys):
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape((1200, 1200, 1200))
    header.set_data_dtype(np.uint8)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    assert path.stat().st_size < 200
    assert_rejected(capsys, tmp_path, path, "claims 1200x1200x1200 voxels")


def test_absurd_voxel_sizes_are_refused(tmp_path, capsys):
    path = _nifti(tmp_path / "wide.nii.gz", _brainish(), affine=np.diag([1e6, 1e6, 1e6, 1.0]))
    assert_rejected(capsys, tmp_path, path, "is outside 0.05-20 mm")


def test_a_zero_voxel_size_is_refused(tmp_path, capsys):
    import struct

    image = nib.Nifti1Image(_brainish(), np.eye(4))
    image.header["qform_code"], image.header["sform_code"] = 1, 0
    path = tmp_path / "flat.nii"
    image.to_filename(str(path))
    raw = bytearray(path.read_bytes())
    raw[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1:4], as a broken writer leaves them (nibabel would not)
    path.write_bytes(bytes(raw))
    assert_rejected(capsys, tmp_path, path, "a voxel size of 0 in its header")


def test_a_nan_affine_says_so(tmp_path, capsys):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = np.nan
    path = _nifti(tmp_path / "lost.nii.gz", _brainish(), affine=affine)
    image = nib.load(str(path))
    if np.isfinite(image.affine).all():
        pytest.skip("nibabel replaced the NaN affine")
    assert_rejected(capsys, tmp_path, path, "affine (voxel-to-world matrix) holds NaN")


def test_complex_voxels_are_refused(tmp_path, capsys):
    path = _nifti(tmp_path / "phase.nii.gz", _brainish().astype(np.complex64))
    assert_rejected(capsys, tmp_path, path, "complex voxel values")


def test_rgb_voxels_are_refused(tmp_path, capsys):
    rgb = np.zeros((20, 20, 20), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = _nifti(tmp_path / "colour.nii.gz", rgb)
    assert_rejected(capsys, tmp_path, path, "3 values per voxel")


def test_an_empty_file_says_it_is_empty(tmp_path, capsys):
    path = tmp_path / "nothing.nii.gz"
    path.write_bytes(b"")
    assert_rejected(capsys, tmp_path, path, "is empty (0 bytes)")


def test_a_binary_mask_given_as_a_scan_is_refused(tmp_path, capsys):
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    path = _nifti(tmp_path / "brain.nii.gz", mask)
    assert_rejected(capsys, tmp_path, path, "holds only the values 0 and 1: a mask, not a scan")


def test_qform_and_sform_that_disagree_are_warned_about(tmp_path, capsys):
    image = nib.Nifti1Image(_brainish(), np.diag([2.0, 2.0, 2.0, 1.0]))
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = 50.0
    image.set_qform(shifted, code=1)
    image.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    path = tmp_path / "two.nii.gz"
    image.to_filename(str(path))
    from uadcore.errors import UADWarning
    from uadcore.io import read_scan

    with pytest.warns(UADWarning, match=r"qform and sform place the voxels up to 87 mm apart; using the sform"):
        scan = read_scan(str(path))
    assert np.allclose(scan.grid.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_an_empty_lesion_mask_of_an_unhealthy_scan_is_warned_about(tmp_path, capsys, cohort):
    from uadcore.io import read_manifest, read_scan

    sick = next(e for e in read_manifest(cohort) if e.label == "unhealthy")
    grid = read_scan(sick.path).grid
    empty = write_nifti(np.zeros(grid.shape, np.uint8), grid, str(tmp_path / "empty_mask.nii.gz"))
    (tmp_path / "list.csv").write_text(f"path,label,mask\n{sick.path},unhealthy,{empty}\n")
    assert main(["check", str(tmp_path / "list.csv")]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and f"{empty}: the lesion mask of the unhealthy scan {sick.path} is empty" in warning[0]


# ---- exit codes and messages --------------------------------------------------------

def test_an_out_folder_that_cannot_be_made_is_exit_2(tmp_path, capsys, cohort):
    """Under a read-only folder (as a user) or under a file (root writes anywhere)."""
    (tmp_path / "locked").mkdir()
    if os.geteuid() == 0:
        os.rmdir(tmp_path / "locked")
        (tmp_path / "locked").write_text("a file, not a folder")
    else:
        os.chmod(tmp_path / "locked", 0o500)
    code = main(["train", "--data", cohort, "--config", _tiny_settings(tmp_path), "--out", str(tmp_path / "locked" / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and str(tmp_path / "locked") in lines[0], lines


def test_random_bytes_as_a_checkpoint_never_suggest_weights_only_false(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(os.urandom(3000))
    assert main(["score", str(tmp_path / "run"), str(tmp_path / "x.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "is not a UAD checkpoint" in err and "weights_only" not in err and err.count("\n") == 1


def test_a_checkpoint_whose_weights_do_not_fit_its_model_is_one_line(tmp_path, capsys, cohort):
    import shutil

    import torch

    from uadcore.train import TrainConfig, train
    from uadcore.io.checkpoint import load_checkpoint, save_checkpoint

    config = TrainConfig.from_dict({"data": cohort, "model_params": {"channels": [2, 4, 8, 16], "latent": 16}, "epochs": 1,
                                    "batch_size": 2, "reinit_at": [], "val_fraction": 0.0, "workers": 1})
    train(config, str(tmp_path / "run"))
    state = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    state["model"] = {name: torch.zeros(3) for name in state["model"]}
    save_checkpoint(state, str(tmp_path / "run" / "checkpoint.pt"))
    scan = os.path.join(os.path.dirname(cohort), "healthy", sorted(os.listdir(os.path.join(os.path.dirname(cohort), "healthy")))[0])
    assert main(["score", str(tmp_path / "run"), scan]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "its weights do not fit model ae3d" in err[0] and "size mismatch" not in err[0]
    # options that make no model, or a huge one: refused before anything is built (before: exit 1 after GBs)
    for options, reason in (({"channels": []}, "bad options"), ({"channels": [2, 4], "latent": 10**10}, "parameters, more than")):
        crafted = {**state, "config": {**state["config"], "model_params": options}}
        save_checkpoint(crafted, str(tmp_path / "run" / "checkpoint.pt"))
        assert main(["score", str(tmp_path / "run"), scan]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and f"{tmp_path / 'run' / 'checkpoint.pt'}: model ae3d: " in err[0] and reason in err[0], err
    shutil.rmtree(tmp_path / "run")


def test_a_plot_that_is_not_a_png_is_refused_before_any_work(tmp_path, capsys, cohort):
    assert main(["evaluate", str(tmp_path / "no-run"), "--data", cohort, "--plot", str(tmp_path / "x.nii.gz")]) == 2
    assert "--plot " + str(tmp_path / "x.nii.gz") + ": the ROC plot is a PNG picture" in capsys.readouterr().err


def test_gui_with_an_unreadable_scan_is_exit_2(tmp_path):
    bad = tmp_path / "noise.nii.gz"
    bad.write_bytes(os.urandom(500))
    result = subprocess.run([sys.executable, "-m", "uadcore", "gui", "--scan", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and str(bad) in result.stderr


def test_train_events_and_json_give_only_events_the_last_being_the_summary(tmp_path, cohort):
    import json

    result = subprocess.run([sys.executable, "-m", "uadcore", "train", "--data", cohort, "--config", _tiny_settings(tmp_path),
                             "--out", str(tmp_path / "run"), "--events", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "done" and "kept" in events[-1] and all("event" in e for e in events)


def test_library_chatter_is_hidden_unless_debug():
    script = ("import warnings, logging, numpy as np\n"
              "from uadcore.libraries import quiet_libraries\n"
              "from uadcore.errors import warn\n"
              "import sys\n"
              "quiet_libraries(sys.argv[1] == 'debug', prefix='uad test')\n"
              "np.log(np.zeros(1))\n"
              "warnings.warn('from a library', FutureWarning)\n"
              "logging.getLogger('nibabel').warning('pixdim[1,2,3] should be non-zero')\n"
              "warn('/data/a.nii.gz: something the user should know')\n")
    quiet = subprocess.run([sys.executable, "-c", script, "quiet"], capture_output=True, text=True)
    assert quiet.stderr == "uad test: warning: /data/a.nii.gz: something the user should know\n"
    loud = subprocess.run([sys.executable, "-c", script, "debug"], capture_output=True, text=True)
    assert "RuntimeWarning" in loud.stderr and "from a library" in loud.stderr and "pixdim" in loud.stderr


def test_a_scan_with_no_slice_for_a_2d_model_is_left_out_not_nan(cohort):
    """No slice holds enough brain (here: the preset asks for slices all brain), so
    the scan gives the model nothing: left out with the reason, never a NaN loss."""
    from uadcore.io import read_manifest
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_set

    entries = read_manifest(cohort)[:1]
    problems = {}
    with pytest.raises(Exception, match="none of the 1 scans could be prepared"):
        prepare_set(entries, make_preset("brain2d-slices", min_brain_fraction=1.0), workers=1, progress=False, problems=problems)
    assert "no slice of it lies inside the brain" in problems[entries[0].path]


def test_a_checkpoint_with_damaged_json_is_one_line(tmp_path):
    import torch

    from uadcore.errors import UADError
    from uadcore.io.checkpoint import FORMAT, VERSION, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "version": VERSION, "config": "{not json"}, str(path))
    with pytest.raises(UADError, match="its config is not valid JSON"):
        load_checkpoint(str(path))


def test_a_missing_dice_says_why():
    from uadcore.evaluate.run import _dice

    healthy = (np.random.default_rng(0).random((8, 8, 8)), np.zeros((8, 8, 8), bool), np.ones((8, 8, 8), bool))
    lesion = np.zeros((8, 8, 8), bool)
    lesion[2:4, 2:4, 2:4] = True
    sick = (np.where(lesion, 2.0, 0.1), lesion, np.ones((8, 8, 8), bool))
    # seed 0 draws the healthy scan to choose the threshold: no lesion voxel there
    result = next(r for seed in range(20) for r in [_dice([healthy, sick], 0.5, seed, False)] if r["dice"] is None)
    assert result["dice_missing"].startswith("no lesion voxel in the 1 scan(s) drawn to choose the threshold")


def _gzip_with_zeros(path, header_bytes: bytes, zeros: int) -> None:
    """A .nii.gz: ``header_bytes`` then ``zeros`` zero bytes, compressed as it goes (a
    GB of zeros is a MB of gzip)."""
    import zlib

    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1 << 22)
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header_bytes))
        for start in range(0, zeros, len(block)):
            handle.write(compressor.compress(block[: min(len(block), zeros - start)]))
        handle.write(compressor.flush())


def _peak_memory_of_reading(path) -> tuple[int, str]:
    """(peak memory in MB, stderr) of a fresh process that reads ``path`` with `read_scan`."""
    # VmHWM, not ru_maxrss: that one keeps the peak of the (forked) pytest process from before exec
    code = ("import sys\nfrom uadcore.io import read_scan\nfrom uadcore.errors import UADError\n"
            "try:\n    read_scan(sys.argv[1])\nexcept UADError as error:\n    print(error, file=sys.stderr)\n"
            "print([int(line.split()[1]) // 1024 for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    return int(done.stdout.split()[-1]), done.stderr


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from Linux /proc")
def test_a_gzip_bomb_is_refused_from_its_header_without_inflating_it(tmp_path):
    # 1.2 GB of claimed voxels in 1.2 MB of gzip: before, all of it was inflated (and more) before "too large"
    header = nib.Nifti1Header()
    header.set_data_shape((1100, 1000, 1000))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    bomb = tmp_path / "bomb.nii.gz"
    _gzip_with_zeros(bomb, header.binaryblock + b"\0" * 4, 1_100_000_000)
    assert bomb.stat().st_size < 5_000_000
    peak, err = _peak_memory_of_reading(bomb)
    assert "claims 1100x1000x1000 voxels, more than any scan has" in err
    assert peak < 500, f"{peak} MB to refuse it"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from Linux /proc")
def test_data_past_what_the_header_needs_is_never_inflated(tmp_path):
    array, grid, _ = marker_volume(shape=(40, 40, 40))
    image = nib.Nifti1Image(array, grid.affine)
    image.header["vox_offset"] = 352
    padded = tmp_path / "padded.nii.gz"
    _gzip_with_zeros(padded, image.header.binaryblock + b"\0" * 4 + array.astype("<f4").tobytes(order="F"), 800_000_000)
    peak, err = _peak_memory_of_reading(padded)
    assert err == "" and peak < 400, f"{peak} MB for a 256 KB scan: {err}"


def test_a_nifti_followed_by_nul_padding_reads_as_itself(tmp_path):
    from uadcore.io import read_scan

    array, grid, _ = marker_volume(shape=(30, 30, 20))
    path = write_nifti(array, grid, str(tmp_path / "scan.nii.gz"))
    with open(path, "ab") as handle:  # as some transfer tools leave files: gzip and nibabel read them
        handle.write(b"\0" * 4096)
    assert np.array_equal(read_scan(path).array, array)


def test_dicom_rows_and_columns_beyond_the_bytes_present_are_refused_before_reading(tmp_path, capsys):
    from volumes import write_dicom_series

    array, grid, _ = marker_volume(shape=(32, 32, 6))
    folder = write_dicom_series(array, grid, str(tmp_path / "series"))
    for name in os.listdir(folder):  # Rows and Columns (0028,0010/0011), implicit VR little endian, patched to 4096
        path = os.path.join(folder, name)
        data = open(path, "rb").read()
        for tag in (b"\x28\x00\x10\x00\x02\x00\x00\x00", b"\x28\x00\x11\x00\x02\x00\x00\x00"):
            at = data.index(tag) + len(tag)
            data = data[:at] + (4096).to_bytes(2, "little") + data[at + 2 :]
        open(path, "wb").write(data)
    assert_rejected(capsys, tmp_path, folder, "its header claims 4096x4096x1 pixels")


def test_a_file_name_that_is_not_utf8_is_refused_up_front_naming_it(tmp_path, capsys, cohort):
    import shutil

    from uadcore.io import read_manifest

    data = tmp_path / "data"
    data.mkdir()
    scans = [e.path for e in read_manifest(cohort)][:2]
    shutil.copy(scans[0], data / "good.nii.gz")
    shutil.copy(scans[1], os.path.join(str(data), os.fsdecode(b"caf\xe9.nii.gz")))  # a Latin-1 name
    before = folder_state(data)
    for command in (["check", str(data)], ["train", "--data", str(data), "--model", "normative", "--out", str(tmp_path / "run")]):
        assert main(command) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "caf\\xe9.nii.gz: its name is not valid UTF-8" in lines[0], lines
    assert not (tmp_path / "run").exists() and folder_state(data) == before
    out = os.path.join(str(tmp_path), os.fsdecode(b"run\xe9"))
    assert main(["train", "--data", str(data / "good.nii.gz"), "--model", "normative", "--out", out]) == 2
    assert "run\\xe9: its name is not valid UTF-8" in capsys.readouterr().err and not os.path.exists(out)
