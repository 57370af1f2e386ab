"""One training engine for every model, with outlier removal during training.

Read it top to bottom in `train`: prepare the data once, then per epoch shuffle
the kept scans, take each batch's per-sample losses from the training pass itself
(no extra pass), and every `outlier_every` epochs remove the scans whose loss is
above gamma x the epoch's mean. Weights are re-initialised after the epochs in
`reinit_at`; removal carries on. Checkpoints are written atomically; a run stopped
(SIGTERM, or a file named STOP in the run folder) or killed resumes from its last
checkpoint and reaches the same kept and removed scans.

Run folder:
    config.json      the full configuration
    checkpoint.pt    weights, optimiser, epoch, kept scans, audit, history, ...
    outliers.csv     every removed scan: when, its loss, the threshold, its label
    history.csv      loss and counts per epoch
    kept.csv         manifest of the scans still in the training set
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import random
import signal
import time

import numpy as np
import torch

from uadcore.device import amp_dtype, describe, pick_device
from uadcore.errors import UADError, warn
from uadcore.io import ScanEntry, load_dataset, write_manifest
from uadcore.io.atomic import atomic_path, remove_stale_temporaries
from uadcore.models import MODELS, make_model
from uadcore.preprocess import make_preset
from uadcore.progress import progress_bar
from uadcore.score.sample import mean_per_scan
from uadcore.train import distributed
from uadcore.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, write_failure
from uadcore.train.config import SETTLED, TrainConfig, training_batch_size
from uadcore.train.data import prepare_scans, prepare_set
from uadcore.train.events import Events
from uadcore.train.outliers import find_outliers, write_audit

STOP_FILE = "STOP"
CONFIG_NAME = "config.json"
FEW_VALIDATION_SCANS = 10  # a healthy reference on fewer is warned about
MIN_KEPT_SHARE = 0.25  # outlier removal never leaves fewer of the training scans than this
SEED_STRIDE = 1_000_003  # keeps the per-epoch and per-reinit seeds apart


def train(config: TrainConfig | None, run_dir: str, resume: bool = False, events: Events | None = None) -> dict:
    """Train (or resume) the run in ``run_dir``; returns a summary dict."""
    events = events or Events()
    run_dir = os.path.abspath(run_dir)
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_NAME)
    config_path = os.path.join(run_dir, CONFIG_NAME)
    stored, restart = None, False
    if resume and not os.path.isfile(checkpoint_path) and os.path.isfile(config_path):
        # a start that ended before its first checkpoint (killed while preparing
        # the scans): start it again from the configuration it wrote
        config, restart = TrainConfig.from_dict(TrainConfig.from_file(config_path), source=config_path), True
        warn(f"{run_dir}: no checkpoint yet (the run ended before its first one); starting it again from {CONFIG_NAME}")
    elif resume:
        stored = load_checkpoint(checkpoint_path)
        config = TrainConfig.from_dict(stored["config"], source=checkpoint_path)
        if stored.get("done"):
            raise UADError(f"{run_dir}: this run is complete ({stored['epoch']} epochs); start a new run to train more")
    existed = os.path.isdir(run_dir)
    ours_to_forget = not resume and not os.path.exists(config_path)  # never another start's config.json
    remove_stale_temporaries(run_dir)
    ranks = distributed.start(config.device)
    events.enabled_here = ranks.is_main
    try:
        return _train(config, run_dir, stored, events, ranks, restart)
    except BaseException:
        if ours_to_forget and ranks.is_main:
            _forget_failed_start(run_dir, remove_folder=not existed)
        raise
    finally:
        distributed.stop(ranks)


def _forget_failed_start(run_dir: str, remove_folder: bool) -> None:
    """A fresh start that failed before its first checkpoint leaves nothing: its
    config.json (and the folder, when this start made it) go. A failure after a
    checkpoint leaves the run, resumable."""
    if os.path.isfile(os.path.join(run_dir, CHECKPOINT_NAME)):
        return
    for name in (CONFIG_NAME, STOP_FILE):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(run_dir, name))
    if remove_folder:
        with contextlib.suppress(OSError):
            os.rmdir(run_dir)  # only when empty: never anything else that is there


def _train(config, run_dir, stored, events, ranks, restart=False):
    device = pick_device(config.device, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    autocast_dtype = amp_dtype(device, config.amp)
    if config.model not in MODELS:
        raise UADError(f"unknown model '{config.model}'; models are {', '.join(MODELS)}")
    preset = make_preset(MODELS[config.model]["preset"], **{**MODELS[config.model].get("preset_params", {}), **config.preset_params})

    # ---- the scans -------------------------------------------------------------
    if stored is None:
        entries = load_dataset(config.data)
        train_entries, val_entries = _split(entries, config)
        _check_removal_score(config, preset, len(val_entries))
        created = False
        try:
            if ranks.is_main:
                _create_run_dir(run_dir, config, entries, restart)
            created = True
        finally:
            distributed.agree(created, ranks, device, "creating the run folder")
    else:
        train_entries = [ScanEntry(**e) for e in stored["train_entries"]]
        val_entries = [ScanEntry(**e) for e in stored["validation"]["entries"]]
    show_progress = ranks.is_main and events.progress
    # a scan that cannot be prepared (unreadable, no brain found, a failed
    # registration) is left out of the run and listed in its audit, not fatal
    problems = {}
    train_set = prepare_set(train_entries, preset, config.workers or None, progress=show_progress, problems=problems)
    val_set = prepare_set(val_entries, preset, config.workers or None, progress=show_progress, problems=problems) if val_entries else None
    excluded = [{"path": entry.path, "epoch": 0, "label": entry.label or "", "reason": problems[entry.path]}
                for entry in train_entries + val_entries if entry.path in problems]
    for row in excluded:
        events.emit("excluded", path=row["path"], reason=row["reason"])
    train_entries, val_entries = train_set.entries, (val_set.entries if val_set is not None else [])
    n_scans = len(train_set)
    if config.batch_size is None:  # resolved once and stored with the run: a resumed run takes the same steps
        config.batch_size = training_batch_size(len(train_set.items))

    # ---- model, optimiser, state -----------------------------------------------
    torch.manual_seed(config.seed)
    model = make_model(config.model, train_set.items.shape[2:], **config.model_params).to(device)
    channels_last = device.type == "cuda" and train_set.items.dim() == 5
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    # models trained in two stages (the MAE, then its anomaly classifier) name them;
    # outlier removal, re-initialisation and the validation-loss schedules belong to
    # the first stage; the second runs `classifier_epochs` epochs after it
    stages = getattr(model, "stages", ("model",))
    # a model fitted in closed form (the normative baseline) is refitted on the kept
    # scans whenever they change, instead of taking gradient steps
    closed_form = getattr(model, "fits_in_closed_form", False)
    fitted_on = None  # the kept scans the closed-form fit used
    state = {"first_stage_end": config.epochs}

    def stage_at(epoch):
        return stages[1] if len(stages) > 1 and epoch > state["first_stage_end"] else stages[0]

    def last_epoch():
        return state["first_stage_end"] + (config.classifier_epochs if len(stages) > 1 else 0)

    def make_optimizer(stage, fresh):
        if closed_form:
            return None
        parameters = model.begin_stage(stage, fresh) if len(stages) > 1 else model.parameters()
        if stage == "classifier":
            return torch.optim.AdamW(parameters, lr=config.classifier_lr, weight_decay=config.classifier_weight_decay)
        return torch.optim.Adam(parameters, lr=config.lr)

    def wrap(model):
        trained = _PerSampleLoss(model)
        if closed_form:
            return trained
        if ranks.enabled:
            trained = torch.nn.parallel.DistributedDataParallel(trained)
        return torch.compile(trained) if config.compile else trained

    watch_validation = val_set is not None
    # validation-loss bookkeeping for the LR plateau schedule and early stopping
    plateau = {"best": float("inf"), "stale": 0, "best_run": float("inf"), "stale_run": 0}
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    kept = torch.ones(n_scans, dtype=torch.bool)
    audit, history, first_epoch = excluded, [], 1
    if stored is not None:
        model.load_state_dict(stored["model"])
        kept = stored["kept"].bool()
        audit, history, first_epoch = stored["audit"], stored["history"], stored["epoch"] + 1
        plateau = stored.get("plateau", plateau)
        state["first_stage_end"] = stored.get("first_stage_end", config.epochs)
        torch.set_rng_state(stored["rng"])
    stage = stage_at(first_epoch - 1) if first_epoch > 1 else stages[0]
    optimizer = make_optimizer(stage, fresh=stored is None)
    if stored is not None and optimizer is not None:
        optimizer.load_state_dict(stored["optimizer"])
    trained = wrap(model)

    # the whole training set on the GPU when it fits in half of the free memory
    items = train_set.items
    if device.type == "cuda" and items.numel() * 4 < 0.5 * torch.cuda.mem_get_info(device)[0]:
        items = items.to(device)
    per_rank_batch = max(1, config.batch_size // ranks.world)

    def snapshot(epoch):
        return {"epoch": epoch, "model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else {},
                "kept": kept.clone(), "audit": copy.deepcopy(audit), "history": copy.deepcopy(history), "rng": torch.get_rng_state(),
                "plateau": dict(plateau), "first_stage_end": state["first_stage_end"]}

    def write(state, done=False):
        if not ranks.is_main:
            return
        save_checkpoint(
            {**state, "config": config.to_dict(), "preset": preset.to_dict(), "done": done,
             "train_entries": [vars(e) for e in train_entries],
             "validation": {"entries": [vars(e) for e in val_entries], **state.get("validation", {})}},
            os.path.join(run_dir, CHECKPOINT_NAME),
        )
        try:  # the readable copies; the checkpoint above is what a resume needs
            write_audit(state["audit"], os.path.join(run_dir, "outliers.csv"))
            _write_history(state["history"], os.path.join(run_dir, "history.csv"))
            write_manifest([e for e, k in zip(train_entries, state["kept"]) if k], os.path.join(run_dir, "kept.csv"))
        except OSError as error:
            raise write_failure(run_dir, error) from error
        events.emit("checkpoint", epoch=state["epoch"], path=os.path.join(run_dir, CHECKPOINT_NAME))

    stop_requested = _StopRequest(run_dir)
    events.emit("start", run=run_dir, model=config.model, scans=n_scans, validation=len(val_entries),
                epochs=last_epoch(), first_epoch=first_epoch, device=describe(device), ranks=ranks.world,
                batch_size=config.batch_size, parameters=sum(p.numel() for p in model.parameters()))
    last = snapshot(first_epoch - 1)
    bar = progress_bar(total=last_epoch(), desc="train", unit="epoch", enabled=show_progress)
    bar.update(first_epoch - 1)
    epoch = first_epoch
    try:
        while epoch <= last_epoch():
            started = time.perf_counter()
            first_stage = stage_at(epoch) == stages[0]
            if stage_at(epoch) != stage:
                stage = stage_at(epoch)
                optimizer, trained = make_optimizer(stage, fresh=True), wrap(model)
                events.emit("stage", epoch=epoch, stage=stage, epochs=last_epoch())
            if first_stage and epoch - 1 in config.reinit_at:
                _reinitialise(model, config.seed + SEED_STRIDE * (config.reinit_at.index(epoch - 1) + 1))
                optimizer = make_optimizer(stage, fresh=True)
                plateau.update(best=float("inf"), stale=0, best_run=float("inf"), stale_run=0)
                events.emit("reinit", epoch=epoch)

            # the kept scans' items in an order that depends only on (seed, epoch)
            generator = torch.Generator().manual_seed(config.seed * SEED_STRIDE + epoch)
            kept_items = train_set.items_of(kept)
            global_order = kept_items[torch.randperm(len(kept_items), generator=generator)]
            order, real = distributed.shard(global_order, ranks)
            if closed_form and (fitted_on is None or not torch.equal(fitted_on, kept)):
                model.fit(train_set.items[kept_items], train_set.regions[kept_items])
                fitted_on = kept.clone()
            item_loss = torch.zeros(len(train_set.items), dtype=torch.float64)
            item_seen = torch.zeros(len(train_set.items), dtype=torch.float64)

            trained.train()
            for start in range(0, len(order), per_rank_batch):
                if distributed.any_rank(stop_requested(), ranks, device):
                    raise _Stopped()
                index, weight = order[start : start + per_rank_batch], real[start : start + per_rank_batch]
                # the mean over this step's real samples on all ranks (DDP averages
                # the ranks' gradients, hence the factor world)
                step_samples = min(per_rank_batch * ranks.world, len(global_order) - start * ranks.world)
                x = items[index.to(items.device)].to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None), \
                        torch.set_grad_enabled(not closed_form):
                    losses = trained(x)
                if distributed.any_rank(not bool(torch.isfinite(losses.detach()).all()), ranks, device):  # every rank stops
                    raise UADError(_diverged(run_dir, epoch, optimizer, losses))
                if not closed_form:
                    optimizer.zero_grad(set_to_none=True)
                    step_loss = (losses * weight.to(device)).sum() * (ranks.world / step_samples)
                    scaler.scale(step_loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                item_loss.index_add_(0, index[weight], losses.detach().double().cpu()[weight])
                item_seen.index_add_(0, index[weight], torch.ones(int(weight.sum()), dtype=torch.float64))

            distributed.sum_across(item_loss, ranks, device)
            distributed.sum_across(item_seen, ranks, device)
            seen = item_seen > 0
            losses_now = mean_per_scan(item_loss[seen] / item_seen[seen], train_set.item_scan[seen], n_scans)
            epoch_mean = float(losses_now[kept].mean())
            removed_now = []
            removal = None  # at a removal epoch: "on", or "waiting" for the loss to settle
            if first_stage and config.outlier_removal and epoch % config.outlier_every == 0:
                waits = config.removal_start == "settled" and not closed_form  # a closed-form fit is always converged
                removal = "waiting" if waits and not removal_allowed(history, epoch, epoch_mean, config) else "on"
            if removal == "on":
                measured = losses_now if config.removal_score == "loss" else \
                    _removal_scores(model, train_set, val_set, device, autocast_dtype, config.removal_score)
                remove, threshold, mean = find_outliers(measured, kept, config.gamma)
                would_keep = int((kept & ~remove).sum())
                if remove.any() and would_keep < MIN_KEPT_SHARE * n_scans:
                    events.emit("removal_held", epoch=epoch, would_keep=would_keep, scans=n_scans)
                    warn(f"{run_dir}: epoch {epoch}: outlier removal would keep only {would_keep} of the {n_scans} training "
                         f"scans (under {MIN_KEPT_SHARE:.0%}); removed none (is gamma {config.gamma:g} too low?)")
                    remove = torch.zeros_like(kept)
                for index in torch.nonzero(remove, as_tuple=True)[0].tolist():
                    entry = train_entries[index]
                    row = {"path": entry.path, "epoch": epoch, "loss": round(float(measured[index]), 6),
                           "threshold": round(threshold, 6), "loss_over_mean": round(float(measured[index]) / mean, 4),
                           "label": entry.label or "", "score": config.removal_score}
                    audit.append(row)
                    removed_now.append(row)
                kept = kept & ~remove
                if removed_now:
                    events.emit("removed", epoch=epoch, threshold=round(threshold, 6), samples=removed_now)
            record = {"epoch": epoch, "loss": round(epoch_mean, 6), "kept": int(kept.sum()), "removed": _removed(audit),
                      "seconds": round(time.perf_counter() - started, 3)}
            if removal:
                record["removal"] = removal
            if len(stages) > 1:
                record["stage"] = stage
            if watch_validation and first_stage:
                record["val_loss"] = round(_validation_loss(model, val_set, device, autocast_dtype), 6)
                if optimizer is not None:
                    record["lr"] = _follow_plateau(optimizer, plateau, record["val_loss"], config.plateau_patience)
            history.append(record)
            events.emit("epoch", **history[-1], epochs=last_epoch())
            if epoch == first_epoch:
                _estimate(events, record["seconds"], epoch, last_epoch(), device, config)
            bar.set_postfix(loss=f"{epoch_mean:.4f}", kept=int(kept.sum()), removed=_removed(audit))
            bar.update()
            if first_stage and watch_validation and config.early_stop_patience and plateau["stale_run"] >= config.early_stop_patience:
                events.emit("early_stop", epoch=epoch, best_val_loss=round(plateau["best_run"], 6))
                state["first_stage_end"] = epoch  # the next stage, if any, starts now
                bar.total = last_epoch()
            last = snapshot(epoch)
            if epoch % config.checkpoint_every == 0 and epoch < last_epoch():
                write(last)
            epoch += 1
    except _Stopped:
        write(last)
        stop_requested.clear()
        bar.close()
        events.emit("stopped", epoch=last["epoch"], resume=f"uad train --resume {run_dir}")
        return {"run": run_dir, "stopped": True, "epoch": last["epoch"]}
    finally:
        stop_requested.restore()
    bar.close()

    # the healthy validation scans, per map kind: the per-voxel calibration of the maps,
    # the sample scores a new scan is ranked against, the voxel thresholds at 1, 5 and
    # 10 % false positives, and the sample score chosen on pseudo-lesions
    validation, calibration = {}, {}
    if val_set is not None:
        from uadcore.score.calibration import healthy_reference
        from uadcore.score.scorer import Scorer

        val_prepared = [result[0] for result in prepare_scans(val_entries, preset, config.workers or None, progress=False)]
        scorer = Scorer.of_model(model, config.to_dict(), preset, device)
        validation, calibrations = healthy_reference(scorer, val_prepared, MODELS[config.model]["maps"], seed=config.seed)
        calibration = {kind: c.to_state() for kind, c in calibrations.items()}
    if not val_entries:
        warn(f"{run_dir}: no validation scans held out: scores get no healthy percentile, thresholds or calibrated maps")
    elif len(val_entries) < FEW_VALIDATION_SCANS:
        warn(f"{run_dir}: the healthy reference (percentiles, the 1/5/10 % thresholds{', the calibration' if calibration else ''}) "
             f"rests on {len(val_entries)} validation scan(s); it is rough below {FEW_VALIDATION_SCANS}: "
             "hold out more scans (--val-fraction) for a firmer one")
    final = {**last, "validation": validation, "calibration": calibration}
    write(final, done=True)
    falling = still_falling(history, config)
    if falling is not None:
        events.emit("still_improving", epoch=last["epoch"], fell_percent=round(100 * falling, 1))
    summary = {"run": run_dir, "epochs": last["epoch"], "scans": n_scans, "kept": int(kept.sum()),
               "batch_size": config.batch_size, "still_improving": falling is not None, "validation": len(val_entries),
               "removed": _removed(audit), "removed_unhealthy": sum(r["label"] == "unhealthy" for r in audit if r["epoch"]),
               "excluded": len(audit) - _removed(audit),
               "final_loss": history[-1]["loss"] if history else None}
    events.emit("done", **summary)
    return summary


def _diverged(run_dir: str, epoch: int, optimizer, losses: torch.Tensor) -> str:
    """The error for a loss that is NaN or infinite: the weights diverged (a
    learning rate too high) and every later step would train on garbage."""
    lr = f" at learning rate {optimizer.param_groups[0]['lr']:g}" if optimizer is not None else ""
    values = losses.detach().float()
    bad = values[~torch.isfinite(values)]
    what = f"became {bad[0].item()}" if len(bad) else "became non-finite (on another rank)"
    return (f"{run_dir}: the training loss {what} in epoch {epoch}{lr}: the weights diverged; "
            "start a new run with a lower --lr (the last checkpoint holds the weights before this epoch)")


LONG_RUN_HOURS = 1.0  # a run expected to take longer is announced with its estimate


def _estimate(events: Events, seconds: float, epoch: int, last: int, device, config: TrainConfig) -> None:
    """After the first epoch: what the whole run will cost here, when that is long,
    and on a CPU how to choose a configuration that trains in minutes."""
    hours = seconds * (last - epoch + 1) / 3600
    if hours < LONG_RUN_HOURS:
        return
    advice = None
    if device.type == "cpu" and not config.model_params:  # the paper-size model
        advice = ("the paper's configuration is made for a GPU; on a CPU, --size small --epochs 40 (a small model) "
                  "trains in minutes")
    events.emit("estimate", epoch=epoch, seconds=round(seconds, 1), epochs=last, hours=round(hours, 2), advice=advice)


def removal_allowed(history: list[dict], epoch: int, loss: float, config: TrainConfig) -> bool:
    """May outlier removal run at ``epoch`` (epoch mean loss ``loss``)? Once the loss
    has settled (fell by under `SETTLED` over the last ``outlier_every`` epochs) since
    the start or the last re-initialisation, and at every removal epoch after that:
    removal on an unconverged model throws healthy scans away."""
    since = _last_reinit(config, epoch)
    records = [r for r in history if r["epoch"] > since]
    if any(r.get("removal") == "on" for r in records):
        return True
    before = [r["loss"] for r in records if r["epoch"] == epoch - config.outlier_every]
    return bool(before) and before[0] - loss <= SETTLED * before[0]


def _last_reinit(config: TrainConfig, epoch: int) -> int:
    """The epoch after which the weights were last re-initialised before ``epoch`` (0: never)."""
    return max([0] + [e for e in config.reinit_at if e < epoch])


CONVERGED = 0.02  # a validation loss that fell less than this over the last epochs has settled


def still_falling(history: list[dict], config: TrainConfig) -> float | None:
    """How much the validation loss (or, without validation scans, the training loss)
    fell over the last tenth of the first stage's epochs since the last
    re-initialisation (at least 3), compared with the tenth before; None when it has
    settled (fell less than `CONVERGED`) or there are too few epochs to say."""
    since = _last_reinit(config, history[-1]["epoch"] if history else 0)
    records = [r for r in history if r["epoch"] > since and r.get("stage", "model") == history[0].get("stage", "model")]
    key = "val_loss" if records and all("val_loss" in r for r in records) else "loss"
    width = max(3, len(records) // 10)
    if len(records) < 2 * width:
        return None
    last = sum(r[key] for r in records[-width:]) / width
    before = sum(r[key] for r in records[-2 * width : -width]) / width
    fell = (before - last) / before if before > 0 else 0.0
    return fell if fell > CONVERGED else None


def _check_removal_score(config: TrainConfig, preset, n_validation: int) -> None:
    """A removal score other than the loss needs what its calibration needs: the
    reconstruction-error map of a whole-volume model on the shared brain grid and
    at least `MIN_SCANS` validation scans. Checked before the run folder exists."""
    from uadcore.score.calibration import MIN_SCANS

    if not config.outlier_removal or config.removal_score == "loss":
        return
    if "rec" not in MODELS[config.model]["maps"] or preset.unit is not None or not preset.prepares_brain:
        raise UADError(f"removal_score {config.removal_score}: needs a whole-volume brain model (ae3d, vae3d, normative); "
                       f"{config.model} scores {preset.unit or 'volume'}s on its own grid; use removal_score loss")
    if n_validation < MIN_SCANS:
        raise UADError(f"removal_score {config.removal_score}: needs at least {MIN_SCANS} validation scans to calibrate "
                       f"the map, this run holds out {n_validation}; raise --val-fraction or use removal_score loss")


@torch.no_grad()
def _removal_scores(model, train_set, val_set, device, autocast_dtype, removal_score: str, batch_size: int = 8) -> torch.Tensor:
    """Each training scan's removal score, (N,) float64: the statistic named in
    ``removal_score`` ("rec-top1", ...) of its reconstruction-error map calibrated
    on the validation scans' maps at this epoch. Whole-volume items (one per scan)."""
    from uadcore.score.calibration import HealthyScorer
    from uadcore.score.maps import batched_map_outputs

    statistic = removal_score.split("-", 1)[1]
    was_training = model.training
    model.eval()

    def maps_of(items, regions):  # (B, I, J, K) maps, 0 outside the brain, and the brains
        regions = regions[:, 0].numpy()
        maps = batched_map_outputs(model, items, device, "rec", batch_size, autocast_dtype)["rec"][:, 0].numpy()
        return np.where(regions, maps, 0.0), regions

    score = HealthyScorer(*maps_of(val_set.items, val_set.regions))
    values = []
    for start in range(0, len(train_set.items), batch_size):  # a batch at a time: N maps need not fit in memory
        maps, regions = maps_of(train_set.items[start : start + batch_size], train_set.regions[start : start + batch_size])
        values += [score(m, r, statistic) for m, r in zip(maps, regions)]
    model.train(was_training)
    return torch.tensor(values, dtype=torch.float64)


@torch.no_grad()
def _validation_loss(model, val_set, device, autocast_dtype, batch_size: int = 8) -> float:
    """Mean per-sample loss of the validation items, model in eval mode."""
    model.eval()
    total = 0.0
    for start in range(0, len(val_set.items), batch_size):
        x = val_set.items[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            total += float(model.loss_per_sample(x).float().sum())
    model.train()
    return total / len(val_set.items)


def _follow_plateau(optimizer, plateau: dict, val_loss: float, patience: int) -> float:
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


class _PerSampleLoss(torch.nn.Module):
    """forward(x) = model.loss_per_sample(x), (B,): so DDP and torch.compile wrap the
    very computation that is trained."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.loss_per_sample(x)


class _Stopped(Exception):
    pass


class _StopRequest:
    """True once SIGTERM arrived or RUN/STOP exists."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, STOP_FILE)
        self.signalled = False
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread (e.g. called from a GUI worker thread)
            pass

    def _on_signal(self, signum, frame):
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled or os.path.exists(self.path)

    def clear(self):
        if os.path.exists(self.path):
            os.remove(self.path)

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _reinitialise(model: torch.nn.Module, seed: int) -> None:
    """Fresh weights (every layer's own initialiser), drawn from ``seed``."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    torch.set_rng_state(state)


def _removed(audit: list[dict]) -> int:
    """Scans outlier removal took out (audit rows of epoch 0 were never trained on)."""
    return sum(1 for row in audit if row["epoch"])


def _split(entries: list[ScanEntry], config: TrainConfig) -> tuple[list[ScanEntry], list[ScanEntry]]:
    """Hold out ``val_fraction`` of the scans not labelled unhealthy (at least one
    when there are 5 or more), drawn with the run's seed."""
    candidates = [i for i, e in enumerate(entries) if e.label != "unhealthy"]
    n_val = int(round(config.val_fraction * len(candidates)))
    if config.val_fraction > 0 and len(candidates) >= 5:
        n_val = max(1, n_val)
    rng = random.Random(config.seed)
    held_out = set(rng.sample(candidates, n_val)) if n_val else set()
    train_entries = [e for i, e in enumerate(entries) if i not in held_out]
    if not train_entries:
        raise UADError(f"{config.data}: no scans left to train on after holding out validation scans")
    return train_entries, [e for i, e in enumerate(entries) if i in held_out]


def _create_run_dir(run_dir: str, config: TrainConfig, entries: list[ScanEntry], restart: bool = False) -> None:
    if not restart and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise UADError(f"{run_dir}: exists and is not empty; resume it with --resume, or choose a new --out")
    data = os.path.abspath(config.data)
    input_folders = {data} if os.path.isdir(data) else {os.path.dirname(e.path) for e in entries}
    for folder in sorted(input_folders):
        if os.path.commonpath([run_dir, folder]) == folder:
            raise UADError(f"{run_dir}: lies inside the input folder {folder}; UAD never writes there, choose another --out")
    os.makedirs(run_dir, exist_ok=True)
    with atomic_path(os.path.join(run_dir, CONFIG_NAME)) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump(config.to_dict(), handle, indent=1)


def _write_history(history: list[dict], path: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        columns = list(dict.fromkeys(key for record in history for key in record))  # some only at some epochs (removal)
        writer = csv.DictWriter(handle, fieldnames=columns or ["epoch", "loss", "kept", "removed", "seconds"])
        writer.writeheader()
        writer.writerows(history)
