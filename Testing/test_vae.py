"""The VAE and its maps: gradients against finite differences, per-image maps that
do not depend on the batch, training through the one engine, scoring."""

import json

import numpy as np
import pytest
import torch

from uadcore.models.blocks import ACTIVATION, WholeGrid
from uadcore.models.vae import VAE, kl_divergence
from uadcore.score.maps import GRADIENT_KINDS, anomaly_maps, batched_maps, map_outputs, smooth


def tiny_vae(dims=2):
    torch.manual_seed(0)
    shape = (16, 12) if dims == 2 else (8, 12, 10)
    return VAE(shape, channels=(2, 4), latent=3, std=0.5).double().eval(), shape


def per_image_term(model, x, kind):
    rec_term, kl, _ = model.terms(x, sample=False)
    rec = rec_term.flatten(1).sum(1)
    return {"kl-grad": kl, "rec-grad": rec, "elbo-grad": rec + kl}[kind]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["kl-grad", "rec-grad", "elbo-grad"])
def test_gradient_maps_match_finite_differences(dims, kind):
    model, shape = tiny_vae(dims)
    x = torch.rand(2, 1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    maps = anomaly_maps(model, x, kind)
    rng = np.random.default_rng(0)
    step = 1e-6
    for _ in range(5):
        index = (int(rng.integers(2)), 0) + tuple(int(rng.integers(n)) for n in shape)
        plus, minus = x.clone(), x.clone()
        plus[index] += step
        minus[index] -= step
        with torch.no_grad():
            numeric = (per_image_term(model, plus, kind)[index[0]] - per_image_term(model, minus, kind)[index[0]]) / (2 * step)
        assert float(maps[index]) == pytest.approx(abs(float(numeric)), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("kind", ["rec", *GRADIENT_KINDS])
def test_a_maps_value_does_not_depend_on_its_batch(kind):
    model, shape = tiny_vae(2)
    model = model.float()
    items = torch.rand(5, 1, *shape, generator=torch.Generator().manual_seed(2))
    alone = batched_maps(model, items[2:3], torch.device("cpu"), kind)
    for batch_size in (1, 2, 5):
        together = batched_maps(model, items, torch.device("cpu"), kind, batch_size=batch_size)
        torch.testing.assert_close(together[2:3], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rec", *GRADIENT_KINDS])
def test_one_forward_pass_gives_the_map_and_every_sample_term(kind):
    model, shape = tiny_vae(2)
    x = torch.rand(3, 1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    calls = []
    model.encoder[0].register_forward_hook(lambda *_: calls.append(1))
    outputs = map_outputs(model, x, kind)
    assert len(calls) == 1
    with torch.no_grad():
        rec_term, kl, reconstruction = model.terms(x, sample=False)
    torch.testing.assert_close(outputs["rec"], (reconstruction - x).abs().float())
    torch.testing.assert_close(outputs["kl"], kl.float())
    torch.testing.assert_close(outputs["elbo"], (rec_term.flatten(1).sum(1) + kl).float())
    if kind != "rec":  # the same map as a pass of its own
        torch.testing.assert_close(outputs[kind], anomaly_maps(model, x, kind))


def test_the_reference_mode_does_depend_on_the_batch():
    model, shape = tiny_vae(2)
    model = model.float()
    items = torch.rand(4, 1, *shape, generator=torch.Generator().manual_seed(3))
    alone = batched_maps(model, items[:1], torch.device("cpu"), "kl-grad", reference=True)
    together = batched_maps(model, items, torch.device("cpu"), "kl-grad", batch_size=4, reference=True)
    assert not torch.allclose(together[:1], alone)  # the batch mean scales each gradient by 1/B


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_the_whole_grid_layer_is_the_convolution_it_replaces(dims, transposed):
    """The VAE's bottleneck layers are matrix products on a convolution's parameters:
    the same values as that convolution, the same parameter names (checkpoints)."""
    torch.manual_seed(0)
    grid = (4, 3, 2)[:dims]
    layer = WholeGrid(dims, 5, 7, grid, transposed=transposed, act=ACTIVATION)
    x = torch.randn(3, 5, *((1,) * dims if transposed else grid))
    assert list(layer.state_dict()) == ["conv.weight", "conv.bias"]
    expected = torch.nn.functional.leaky_relu(layer.conv(x), 0.2)
    assert layer(x).shape == expected.shape == (3, 7, *(grid if transposed else (1,) * dims))
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_kl_of_the_prior_is_zero():
    assert kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def test_smoothing_keeps_a_constant_inside_and_sums_to_one():
    flat = torch.ones(1, 1, 20, 20)
    smoothed = smooth(flat)
    assert torch.allclose(smoothed[..., 5:15, 5:15], torch.ones(1, 1, 10, 10), atol=1e-6)
    spike = torch.zeros(1, 1, 21, 21)
    spike[..., 10, 10] = 1.0
    assert float(smooth(spike).sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_vae2d_trains_with_outlier_removal_and_scores_every_kind(tmp_path, cohort, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, read_scan

    entries = read_manifest(cohort)
    config = tmp_path / "vae.json"
    config.write_text(json.dumps({"model_params": {"channels": [4, 8, 16, 32], "latent": 16}, "epochs": 2, "batch_size": 16,
                                  "outlier_every": 1, "removal_start": "paper", "reinit_at": [], "gamma": 1.01, "val_fraction": 0.0, "workers": 1}))
    assert main(["train", "--data", cohort, "--model", "vae2d", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    state_lr = json.loads((tmp_path / "run" / "config.json").read_text())["lr"]
    assert state_lr == 1e-4  # the paper's learning rate for the VAE
    for kind in ("rec", "kl-grad", "rec-grad", "elbo-grad", "combi"):
        out = tmp_path / f"{kind}.nii.gz"
        assert main(["score", str(tmp_path / "run"), entries[0].path, "--map", kind, "--out", str(out), "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert payload["score"] > 0
        assert read_scan(str(out)).grid.matches(read_scan(entries[0].path).grid)
        scores = {name: payload["sample_scores"][name] for name in ("rec", "kl", "elbo")}
        assert scores["elbo"] > scores["kl"] >= 0
        assert {f"{kind}-mean", f"{kind}-top1"} <= set(payload["sample_scores"])  # this map's statistics (no share: no validation scans)
        if kind == "rec":
            first = scores
        assert scores == pytest.approx(first, rel=1e-5, abs=1e-8)  # the same sample scores, whichever map's pass gave them


@pytest.mark.slow
def test_evaluate_compares_every_map_kind(tmp_path, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, write_manifest
    from uadcore.synth import synthesize_cohort

    entries = read_manifest(synthesize_cohort(str(tmp_path / "c"), healthy=3, unhealthy=2, seed=9, workers=2, progress=False))
    train_manifest = write_manifest(entries[:2], str(tmp_path / "train.csv"))
    test_manifest = write_manifest(entries[2:], str(tmp_path / "test.csv"))
    config = tmp_path / "vae.json"
    config.write_text(json.dumps({"model_params": {"channels": [4, 8, 16, 32], "latent": 16}, "epochs": 1, "batch_size": 16,
                                  "val_fraction": 0.0, "workers": 1}))
    assert main(["train", "--data", train_manifest, "--model", "vae2d", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--data", test_manifest, "--map", "all", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["maps"]) == {"rec", "kl-grad", "rec-grad", "elbo-grad", "combi"}
    rec = payload["maps"]["rec"]
    assert {"rec", "kl", "elbo", "rec-mean", "rec-top1"} <= set(rec["sample_scores"])
    assert rec["sample_scores"][f"rec-{rec['sample_score']}"]["auroc"] == rec["sample_auroc"]
    for report in payload["maps"].values():
        assert 0.0 <= report["voxel_auroc"] <= 1.0 and report["n"] == 3
    assert payload["roc_plot"].endswith("roc.png")
    import os

    assert os.path.isfile(payload["roc_plot"])
