"""Training that converges on small cohorts and says whether it did: the batch size
chosen from the data, outlier removal that waits for the loss to settle, the
"still improving" report, and a regression test of the small AE3D's learning."""

import csv
import os

from uadcore.train import TrainConfig, train
from uadcore.train.config import training_batch_size
from uadcore.train.schedules import removal_allowed, still_falling


def test_the_batch_size_keeps_at_least_16_steps_an_epoch():
    assert training_batch_size(600) == 32  # the paper's cohort: the paper's batch
    assert training_batch_size(54) == 3
    assert training_batch_size(5) == 1
    assert training_batch_size(100 * 50) == 32  # slices of 100 scans


def _history(losses, removal_at=(), every=5):
    return [{"epoch": e, "loss": loss, **({"removal": "on"} if e in removal_at else {})} for e, loss in enumerate(losses, 1)]


def test_removal_waits_for_the_loss_to_settle_then_follows_the_papers_rule():
    config = TrainConfig(outlier_every=5, reinit_at=[15])
    falling = _history([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.18])
    assert not removal_allowed(falling, 10, 0.15, config)  # fell from 0.3 to 0.15 over 5 epochs
    settled = _history([1.0, 0.8, 0.6, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert removal_allowed(settled, 10, 0.195, config)
    assert not removal_allowed(_history([1.0, 0.9, 0.8, 0.7]), 5, 0.6, config)  # nothing to compare with yet
    started = _history([1.0] * 9 + [0.5, 0.4, 0.3, 0.2, 0.1], removal_at=(10,))
    assert removal_allowed(started, 15, 0.05, config)  # once started, every 5 epochs
    # a re-initialised model has to settle again
    after_reinit = _history([0.2] * 9 + [0.2] * 5 + [0.2, 0.9, 0.7, 0.5, 0.4], removal_at=(10,))
    assert not removal_allowed(after_reinit, 20, 0.3, config)


def test_still_falling_is_reported_until_the_validation_loss_settles():
    config = TrainConfig(reinit_at=[])
    falling = [{"epoch": e, "loss": 1.0, "val_loss": 1.0 / e} for e in range(1, 31)]
    assert still_falling(falling, config) > 0.02
    flat = [{"epoch": e, "loss": 1.0, "val_loss": 1.0 / min(e, 10)} for e in range(1, 31)]
    assert still_falling(flat, config) is None
    assert still_falling(falling[:4], config) is None  # too few epochs to say


def test_the_small_ae3d_halves_its_loss_within_40_steps(tmp_path, cohort):
    """A regression test of learning itself: seeded, on 4 cached scans."""
    from uadcore.io import read_manifest, write_manifest
    from uadcore.models import MODELS

    manifest = write_manifest(read_manifest(cohort)[:4], str(tmp_path / "four.csv"))
    config = TrainConfig.from_dict({"data": manifest, "model_params": MODELS["ae3d"].small, "epochs": 10, "val_fraction": 0.0,
                                    "outlier_removal": False, "reinit_at": [], "workers": 1, "device": "cpu"})
    summary = train(config, str(tmp_path / "run"))
    assert summary["batch_size"] == 1  # 4 scans: 4 steps an epoch, 40 in all
    with open(os.path.join(tmp_path, "run", "history.csv"), encoding="utf-8") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] <= 0.5 * losses[0], losses
