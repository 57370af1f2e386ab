"""What the training loop decides from the losses it has seen: when outlier removal
may start, the learning-rate plateau and early stopping, whether the loss is still
falling at the end, and what a long run will cost."""

from __future__ import annotations

from uadcore.train.config import CPU_EPOCHS, SETTLED, TrainConfig
from uadcore.train.events import Events

CONVERGED = 0.02  # a validation loss that fell less than this over the last epochs has settled
LONG_RUN_HOURS = 1.0  # a run expected to take longer is announced with its estimate


def fresh_plateau() -> dict:
    """The validation-loss bookkeeping of a new run (and after a re-initialisation):
    ``best``/``stale`` since the last LR step, ``best_run``/``stale_run`` for early stopping."""
    return {"best": float("inf"), "stale": 0, "best_run": float("inf"), "stale_run": 0}


def follow_plateau(optimizer, plateau: dict, val_loss: float, patience: int) -> float:
    """Count epochs without a better validation loss (better: by 0.01 % at least,
    as PyTorch's ReduceLROnPlateau): ``stale`` since the last LR step (x 0.1 after
    ``patience``), ``stale_run`` for early stopping. Returns the LR."""
    for best, stale in (("best", "stale"), ("best_run", "stale_run")):
        if val_loss < plateau[best] * (1.0 - 1e-4):
            plateau[best], plateau[stale] = val_loss, 0
        else:
            plateau[stale] += 1
    if patience and plateau["stale"] >= patience:
        for group in optimizer.param_groups:
            group["lr"] *= 0.1
        plateau["stale"] = 0
    return optimizer.param_groups[0]["lr"]


def last_reinit(config: TrainConfig, epoch: int) -> int:
    """The epoch after which the weights were last re-initialised before ``epoch`` (0: never)."""
    return max([0] + [e for e in config.reinit_at if e < epoch])


def removal_allowed(history: list[dict], epoch: int, loss: float, config: TrainConfig) -> bool:
    """May outlier removal run at ``epoch`` (epoch mean loss ``loss``)? Once the loss
    has settled (fell by under `SETTLED` over the last ``outlier_every`` epochs) since
    the start or the last re-initialisation, and at every removal epoch after that:
    removal on an unconverged model throws healthy scans away."""
    since = last_reinit(config, epoch)
    records = [r for r in history if r["epoch"] > since]
    if any(r.get("removal") == "on" for r in records):
        return True
    before = [r["loss"] for r in records if r["epoch"] == epoch - config.outlier_every]
    return bool(before) and before[0] - loss <= SETTLED * before[0]


def still_falling(history: list[dict], config: TrainConfig) -> float | None:
    """How much the validation loss (or, without validation scans, the training loss)
    fell over the last tenth of the first stage's epochs since the last
    re-initialisation (at least 3), compared with the tenth before; None when it has
    settled (fell less than `CONVERGED`) or there are too few epochs to say."""
    since = last_reinit(config, history[-1]["epoch"] if history else 0)
    records = [r for r in history if r["epoch"] > since and r.get("stage", "model") == history[0].get("stage", "model")]
    key = "val_loss" if records and all("val_loss" in r for r in records) else "loss"
    width = max(3, len(records) // 10)
    if len(records) < 2 * width:
        return None
    last = sum(r[key] for r in records[-width:]) / width
    before = sum(r[key] for r in records[-2 * width : -width]) / width
    fell = (before - last) / before if before > 0 else 0.0
    return fell if fell > CONVERGED else None


def estimate(events: Events, seconds: float, epoch: int, last: int, device, config: TrainConfig) -> None:
    """After the first epoch: what the whole run will cost here, when that is long,
    and on a CPU how to choose a configuration that trains in minutes."""
    hours = seconds * (last - epoch + 1) / 3600
    if hours < LONG_RUN_HOURS:
        return
    advice = None
    if device.type == "cpu" and not config.model_params:  # the paper-size model
        advice = (f"the paper's configuration is made for a GPU; on a CPU, --size small --epochs {CPU_EPOCHS} (a small model) "
                  "trains in minutes")
    events.emit("estimate", epoch=epoch, seconds=round(seconds, 1), epochs=last, hours=round(hours, 2), advice=advice)
