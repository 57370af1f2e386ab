"""The patch autoencoder of Wei et al.: its layer sizes, per-patch RMSE, and
training, heat maps and patch-level AUROC on 2D images (PNG radiographs with
lesion masks) and on slices of 3D scans, through the `uad` command."""

import json

import numpy as np
import pytest
import torch

from uadcore.models.patchae import PatchAE


def test_layer_sizes_are_the_papers():
    model = PatchAE((128, 128))
    x = torch.rand(2, 1, 128, 128)
    sizes = []
    for layer in model.encoder:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(2, 64, 64), (4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert model(torch.rand(2, 1, 128, 128)).shape == (2, 1, 128, 128)


def test_a_patch_score_is_its_rmse():
    torch.manual_seed(0)
    model, x = PatchAE((32, 32)).eval(), torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        expected = ((model(x) - x) ** 2).mean(dim=(1, 2, 3)).sqrt()
        torch.testing.assert_close(model.patch_rmse(x), expected)


def test_a_patch_side_must_survive_every_halving():
    with pytest.raises(ValueError, match="multiple of 32"):
        PatchAE((48, 48))


def write_films(folder, n_normal=4, n_lesion=3, seed=0):
    """Synthetic 2D 'radiographs' (PNG): smooth tissue texture; some with a bright
    round lesion and its mask. Returns a manifest path."""
    import SimpleITK as sitk
    from scipy import ndimage

    from uadcore.io import ScanEntry, write_manifest

    rng = np.random.default_rng(seed)
    folder.mkdir()
    entries = []
    for index in range(n_normal + n_lesion):
        texture = ndimage.gaussian_filter(rng.standard_normal((96, 112)), 3)
        film = 120 + 400 * texture
        rows, cols = np.indices(film.shape)
        film *= ((rows - 48) ** 2 / 46**2 + (cols - 56) ** 2 / 54**2) <= 1.0  # a body outline
        mask_path = None
        if index >= n_normal:
            centre = rng.integers(30, 66), rng.integers(30, 82)
            lesion = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= 7**2
            film[lesion] = 250
            mask_path = str(folder / f"film{index}_mask.png")
            sitk.WriteImage(sitk.GetImageFromArray(lesion.astype(np.uint8)), mask_path)
        path = str(folder / f"film{index}.png")
        sitk.WriteImage(sitk.GetImageFromArray(np.clip(film, 0, 255).astype(np.uint8)), path)
        entries.append(ScanEntry(path, "unhealthy" if mask_path else "healthy", mask_path))
    return write_manifest(entries, str(folder / "films.csv"))


def test_patchae2d_trains_on_2d_films_and_maps_them_in_their_own_geometry(tmp_path, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, read_scan, write_manifest

    entries = read_manifest(write_films(tmp_path / "films"))
    train_manifest = write_manifest(entries[:3], str(tmp_path / "train.csv"))
    test_manifest = write_manifest(entries[3:], str(tmp_path / "test.csv"))
    config = tmp_path / "patch.json"
    config.write_text(json.dumps({"preset_params": {"patch": 32, "stride": 16}, "epochs": 3, "batch_size": 16,
                                  "outlier_every": 1, "removal_start": "paper", "val_fraction": 0.0, "workers": 1}))
    run = tmp_path / "run"
    assert main(["train", "--data", train_manifest, "--model", "patchae2d", "--config", str(config), "--out", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 3

    film = entries[-1].path
    out = tmp_path / "heat.nii.gz"
    assert main(["score", str(run), film, "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["map"] == "patch-rmse" and set(payload["sample_scores"]) == {"patch-rmse", "rec"}
    heat = read_scan(str(out))
    assert heat.grid.matches(read_scan(film).grid)
    assert heat.array.max() <= payload["score"] + 1e-4  # overlapping patch scores averaged; the image score is their max

    assert main(["evaluate", str(run), "--data", test_manifest, "--unit-overlap", "0.05", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    units = report["units"]
    assert units["kind"] == "patch" and units["overlap"] == 0.05 and units["n"] > units["positive"] > 0
    assert 0.0 <= report["patch_auroc"] <= 1.0 and 0.0 <= report["voxel_auroc"] <= 1.0

    # another map of the same prepared scans runs only that map's pass: its other
    # sample scores are remembered (what `uad evaluate --map all` relies on)
    from uadcore.score.scorer import Scorer
    from uadcore.preprocess.dataset import prepare_scans

    scorer = Scorer(str(run))
    prepared = [p for p, _ in prepare_scans(read_manifest(test_manifest), scorer.preset, progress=False)]
    paths = [e.path for e in read_manifest(test_manifest)]
    passes = []
    scorer._network(prepared[0].inputs().shape[2:]).encoder.register_forward_hook(lambda *_: passes.append(1))
    first = scorer.score_prepared(prepared, paths, "patch-rmse")
    two_passes = len(passes)  # patch-rmse, then rec for its sample score, over every batch of patches
    again = scorer.score_prepared(prepared, paths, "rec")
    assert two_passes > 0 and len(passes) == two_passes * 3 // 2
    model_scores = ("patch-rmse", "rec")
    assert [[r.sample_scores[k] for k in model_scores] for r in again] == [[r.sample_scores[k] for k in model_scores] for r in first]
    # the rec map's mean counts each voxel once (overlapping tiles averaged); the model's rec score averages over tiles
    assert [r.score for r in again] == [r.sample_scores["rec-mean"] for r in again]
    assert [r.score for r in again] == pytest.approx([r.sample_scores["rec"] for r in first], rel=0.02)


def test_patchae2d_tiles_the_slices_of_3d_scans(tmp_path, cohort, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, read_scan, write_manifest

    entries = read_manifest(cohort)
    train_manifest = write_manifest(entries[:2], str(tmp_path / "train.csv"))
    config = tmp_path / "patch.json"
    config.write_text(json.dumps({"preset_params": {"patch": 32, "stride": 32, "spacing_mm": 4.0}, "epochs": 1,
                                  "batch_size": 64, "val_fraction": 0.0, "workers": 1}))
    assert main(["train", "--data", train_manifest, "--model", "patchae2d", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    out = tmp_path / "heat.nii.gz"
    assert main(["score", str(tmp_path / "run"), entries[-1].path, "--map", "rec", "--out", str(out), "--json"]) == 0
    assert read_scan(str(out)).grid.matches(read_scan(entries[-1].path).grid)
