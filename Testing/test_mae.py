"""The masked autoencoder of Georgescu et al.: paste-and-average reconstruction,
masked-only loss, the pseudo-abnormal module, the classifier's class convention,
and two-stage training, scoring and evaluation through the `uad` command."""

import json

import numpy as np
import torch

from uadcore.models.mae import MASK_SEED, MAE, NORMAL, PSEUDO_ABNORMAL, pseudo_abnormal
from uadcore.models.vit import patchify, unpatchify

TINY = {"patch": 4, "dim": 16, "depth": 1, "heads": 2, "decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2}


def tiny_mae(**options):
    torch.manual_seed(0)
    return MAE((16, 16), **{**TINY, **options}).eval()


def images(n=3, size=16, seed=1):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_patches_round_trip():
    x = images(2, 16)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 16, 16)
    assert torch.equal(tokens[0, 1], x[0, 0, 0:4, 4:8].reshape(-1))  # row-major over the patch grid
    assert torch.equal(unpatchify(tokens, 4, (16, 16)), x)


def test_visible_patches_of_a_reconstruction_are_the_input_exactly():
    model, x = tiny_mae(passes=1, extract_mask_ratio=0.75), images()
    with torch.no_grad():
        reconstruction = model.reconstruct(x)
    noise = torch.rand(16, generator=torch.Generator().manual_seed(MASK_SEED))
    visible = torch.argsort(noise)[:4]
    hidden = torch.argsort(noise)[4:]
    got, given = patchify(reconstruction, 4), patchify(x, 4)
    assert torch.equal(got[:, visible], given[:, visible])
    assert not torch.allclose(got[:, hidden], given[:, hidden], atol=1e-3)  # predicted, not copied


def test_four_passes_average_input_and_predictions():
    model, x = tiny_mae(passes=4, extract_mask_ratio=0.5), images()
    with torch.no_grad():
        reconstruction = model.reconstruct(x)
        expected = torch.zeros(3, 16, 16)
        for index in range(4):
            noise = torch.rand(16, generator=torch.Generator().manual_seed(MASK_SEED + index))
            prediction, masked = model.masked_prediction(x, noise, 0.5)
            expected += torch.where(masked[..., None] > 0, prediction, patchify(x, 4))
    torch.testing.assert_close(patchify(reconstruction, 4), expected / 4)
    visible_always = [p for p in range(16) if all(
        p in torch.argsort(torch.rand(16, generator=torch.Generator().manual_seed(MASK_SEED + i)))[:8] for i in range(4))]
    for p in visible_always:  # a patch visible in all four passes is the input, exactly
        assert torch.equal(patchify(reconstruction, 4)[:, p], patchify(x, 4)[:, p])


def test_a_slices_reconstruction_and_score_do_not_depend_on_its_batch():
    model, x = tiny_mae(), images(4)
    with torch.no_grad():
        together, alone = model.reconstruct(x), model.reconstruct(x[2:3])
        torch.testing.assert_close(together[2:3], alone, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.abnormal_probability(x)[2:3], model.abnormal_probability(x[2:3]), atol=1e-6, rtol=1e-5)


def test_the_mae_loss_counts_the_masked_patches_only():
    model, x = tiny_mae().train(), images()
    torch.manual_seed(5)
    loss = model.loss_per_sample(x)
    torch.manual_seed(5)
    noise = torch.rand(3, 16)
    prediction, masked = model.masked_prediction(x, noise, 0.75)
    error = (prediction - patchify(x, 4)).pow(2).mean(-1)
    torch.testing.assert_close(loss, (error * masked).sum(1) / masked.sum(1))
    assert masked.sum(1).tolist() == [12.0] * 3  # mask ratio 0.75 of 16 patches
    assert not torch.allclose(loss, error.mean(1))


def test_pseudo_abnormal_boxes_follow_the_papers_statistics():
    n = 300
    x = torch.rand(n, 1, 224, 224, generator=torch.Generator().manual_seed(0)) + 0.5
    region = torch.zeros(n, 1, 224, 224, dtype=torch.bool)
    region[:, :, 80:150, 60:170] = True
    altered, boxes = pseudo_abnormal(x, region, torch.Generator().manual_seed(1))
    counts = [len(b) for b in boxes]
    assert min(counts) == 1 and max(counts) == 10 and 5.0 < np.mean(counts) < 6.0  # k ~ U{1..10}
    every = [box for image in boxes for box in image]
    sides = np.array([(h, w) for _, _, h, w, _ in every])
    assert sides.min() == 10 and sides.max() == 40 and 23 < sides.mean() < 27  # U{10..40} at 224 x 224
    betas = np.array([beta for *_, beta in every])
    assert 0.0 <= betas.min() and betas.max() < 1.0 and abs(betas.mean() - 0.5) < 0.03
    for top, left, h, w, _ in every:  # centred on the region
        assert region[0, 0, top + h // 2, left + w // 2]
    for index in range(20):  # outside the boxes unchanged, inside times every covering box's beta
        factor = torch.ones(224, 224)
        for top, left, h, w, beta in boxes[index]:
            factor[top : top + h, left : left + w] *= beta
        torch.testing.assert_close(altered[index, 0], x[index, 0] * factor)


def test_pseudo_abnormal_boxes_scale_with_the_image():
    _, boxes = pseudo_abnormal(torch.ones(200, 1, 64, 64), generator=torch.Generator().manual_seed(2))
    sides = np.array([(h, w) for image in boxes for _, _, h, w, _ in image])
    assert sides.min() == 3 and sides.max() == 11  # 10-40 px at 224 is 3-11 px at 64


def test_the_score_is_the_probability_of_the_pseudo_abnormal_class():
    assert (NORMAL, PSEUDO_ABNORMAL) == (0, 1)
    model = tiny_mae().train()
    with torch.no_grad():  # an MAE that reconstructs flat slices of 0.6 perfectly
        model.to_pixels.weight.zero_()
        model.to_pixels.bias.fill_(0.6)
    parameters = model.begin_stage("classifier")
    assert all(not p.requires_grad for p in model.encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=3e-3)
    x = torch.full((16, 1, 16, 16), 0.6)
    torch.manual_seed(0)
    for _ in range(40):
        optimizer.zero_grad()
        model.loss_per_sample(x).mean().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        normal = (x - model.reconstruct(x, random_masks=True)).abs()
        altered, _ = pseudo_abnormal(model.reconstruct(x, random_masks=True), x > 0, torch.Generator().manual_seed(9))
        abnormal = (x - altered).abs()
        p_normal = torch.sigmoid(model.classifier_logit(normal)).mean()
        p_abnormal = torch.sigmoid(model.classifier_logit(abnormal)).mean()
    assert p_abnormal > p_normal + 0.2


def test_the_classifier_stage_starts_from_the_mae_encoder():
    model = tiny_mae()
    model.begin_stage("classifier")
    for (name, a), b in zip(model.encoder.state_dict().items(), model.classifier.state_dict().values()):
        assert torch.equal(a, b), name


def test_mae2d_trains_in_two_stages_scores_and_evaluates(tmp_path, cohort, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, read_scan, write_manifest
    from uadcore.io.checkpoint import load_checkpoint

    entries = read_manifest(cohort)
    healthy = [e for e in entries if e.label == "healthy"]
    train_manifest = write_manifest(healthy[:2] + [e for e in entries if e.label == "unhealthy"][:1], str(tmp_path / "train.csv"))
    test_manifest = write_manifest([healthy[2]] + [e for e in entries if e.label == "unhealthy"][1:], str(tmp_path / "test.csv"))
    config = tmp_path / "mae.json"
    config.write_text(json.dumps({
        "model_params": TINY, "preset_params": {"size": 32}, "epochs": 2, "classifier_epochs": 2, "batch_size": 32,
        "outlier_every": 1, "removal_start": "paper", "gamma": 1.001, "val_fraction": 0.0, "workers": 1, "checkpoint_every": 1}))
    run = tmp_path / "run"
    assert main(["train", "--data", train_manifest, "--model", "mae2d", "--config", str(config), "--out", str(run), "--events"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [(e["epoch"], e["stage"]) for e in epochs] == [(1, "mae"), (2, "mae"), (3, "classifier"), (4, "classifier")]
    assert any(e["event"] == "removed" for e in events)  # outlier removal in the MAE stage
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["classifier"]
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["done"] and state["epoch"] == 4 and state["preset"]["params"]["size"] == 32

    for kind in ("classifier", "rec", "ssim"):
        out = tmp_path / f"{kind}.nii.gz"
        assert main(["score", str(run), healthy[2].path, "--map", kind, "--out", str(out), "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert read_scan(str(out)).grid.matches(read_scan(healthy[2].path).grid)
        assert {"classifier", "rec", "ssim"} <= set(payload["sample_scores"])  # and, for rec, the statistics of its map
        if kind == "classifier":
            assert 0.0 <= payload["score"] <= 1.0 and payload["percentile_vs_healthy"] is None  # no validation scans
            assert np.asarray(read_scan(str(out)).array).max() <= payload["score"] + 1e-3  # slice probabilities, max = score

    assert main(["evaluate", str(run), "--data", test_manifest, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["map"] == "classifier" and report["n"] == 3
    assert 0.0 <= report["slice_auroc"] <= 1.0 and report["units"]["kind"] == "slice"
    assert report["units"]["n"] > report["units"]["positive"] > 0


def test_a_two_stage_run_stopped_in_the_second_stage_resumes_to_the_same_weights(tmp_path, cohort):
    from uadcore.io import read_manifest, write_manifest
    from uadcore.train import STOP_FILE, Events, TrainConfig, train
    from uadcore.io.checkpoint import load_checkpoint

    manifest = write_manifest(read_manifest(cohort)[:2], str(tmp_path / "two.csv"))
    config = TrainConfig.from_dict({"data": manifest, "model": "mae2d", "model_params": TINY, "preset_params": {"size": 32},
                                    "epochs": 2, "classifier_epochs": 2, "batch_size": 32, "val_fraction": 0.0,
                                    "workers": 1, "checkpoint_every": 1, "device": "cpu"})
    train(config, str(tmp_path / "whole"))
    run = tmp_path / "stopped"

    class StopAtEpoch3(Events):
        def emit(self, event, **fields):
            if event == "epoch" and fields["epoch"] == 3:
                (run / STOP_FILE).write_text("")

    assert train(config, str(run), events=StopAtEpoch3())["epoch"] == 3
    train(None, str(run), resume=True)
    whole, resumed = load_checkpoint(str(tmp_path / "whole" / "checkpoint.pt")), load_checkpoint(str(run / "checkpoint.pt"))
    for name, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, msg=name)
