"""One training engine for every model, with outlier removal during training.

Read `train`, then `_train` top to bottom: `open_run` prepares the scans once,
`start_training` builds the model (or restores it from the checkpoint), then each
epoch is `begin_epoch` (a new stage, a re-initialisation after the epochs in
`reinit_at`, a closed-form refit), `run_epoch` (the kept scans shuffled, one pass;
each batch's per-sample losses come from the training pass itself),
`remove_outliers` (every `outlier_every` epochs, the scans whose loss is above
gamma x the epoch's mean) and `step_schedules` (validation loss, learning-rate
plateau), with `write_run` every `checkpoint_every` epochs. At the end
`uadcore.score.calibrate.calibrate_run` stores the healthy reference.

Checkpoints are written atomically; a run stopped (SIGTERM, Ctrl-C, or a file named
STOP in the run folder: a checkpoint at the stop) or killed resumes from its last
checkpoint and reaches the same kept and removed scans. One process at a time
trains a run (`RunOwner`). The run folder's files: `uadcore.io.run_files`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import signal
import time
import warnings
from dataclasses import dataclass

import torch

from uadcore.device import amp_dtype, describe, pick_device, use_device
from uadcore.errors import UADError, UADWarning, warn
from uadcore.io import ScanEntry, load_dataset
from uadcore.io.atomic import remove_stale_temporaries
from uadcore.io.checkpoint import load_checkpoint, save_checkpoint
from uadcore.io.run_files import CONFIG_NAME, RunFiles
from uadcore.models import ModelSpec, model_spec
from uadcore.preprocess import Preset, make_preset
from uadcore.preprocess.cache import cache_root as disk_cache_root
from uadcore.preprocess.dataset import PreparedSet, prepare_scans, prepare_set
from uadcore.progress import progress_bar
from uadcore.score.calibrate import MIN_SCANS, calibrate_run, calibrates
from uadcore.score.sample import mean_per_scan
from uadcore.score.words import FEW_REFERENCE_SCANS
from uadcore.score.scorer import Scorer
from uadcore.train import distributed
from uadcore.train.config import TrainConfig, training_batch_size
from uadcore.train.events import Events
from uadcore.train.outliers import audit_ranking, check_removal_score, find_outliers, removal_scores, removed, was_removed
from uadcore.io.datasets import fingerprint, utf8_name
from uadcore.train.run_folder import (DATA_FINGERPRINT, RunOwner, check_same_data, create_run_dir, stored_fingerprint,
                                      write_readable_copies)
from uadcore.train.schedules import estimate, follow_plateau, fresh_plateau, removal_allowed, still_falling

MIN_KEPT_SHARE = 0.25  # outlier removal never leaves fewer of the training scans than this
SEED_STRIDE = 1_000_003  # keeps the per-epoch and per-reinit seeds apart


@dataclass
class Run:
    """What stays fixed while a run trains."""

    config: TrainConfig
    spec: ModelSpec
    preset: Preset
    files: RunFiles
    events: Events
    ranks: distributed.Ranks
    device: torch.device
    autocast: torch.dtype | None  # the mixed-precision type, None: float32
    train_set: PreparedSet
    val_set: PreparedSet | None  # the held-out healthy scans (None: none held out)
    items: torch.Tensor  # train_set.items, on the GPU when they fit in half of its free memory
    excluded: list[dict]  # audit rows (epoch 0) of the scans that could not be prepared
    data_fingerprint: str  # of the training and validation scans as opened (`io.datasets.fingerprint`)

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" and self.train_set.items.dim() == 5

    @property
    def val_entries(self) -> list[ScanEntry]:
        return self.val_set.entries if self.val_set is not None else []

    @property
    def show_progress(self) -> bool:
        return self.ranks.is_main and self.events.progress


@dataclass
class TrainState:
    """What changes from epoch to epoch; a checkpoint holds it with the weights."""

    epoch: int  # the last finished epoch (0 before the first)
    kept: torch.Tensor  # (N,) bool: the training scans outlier removal has kept
    audit: list[dict]  # the removed (and excluded) scans: outliers.csv
    history: list[dict]  # one record per epoch: history.csv
    plateau: dict  # the validation-loss bookkeeping (`schedules.fresh_plateau`)
    first_stage_end: int  # the first stage's last epoch (earlier after early stopping)

    def stage_at(self, epoch: int, spec: ModelSpec) -> str:
        """The stage trained at ``epoch``: a second stage starts after the first stage's end."""
        return spec.stages[1] if len(spec.stages) > 1 and epoch > self.first_stage_end else spec.stages[0]

    def last_epoch(self, run: Run) -> int:
        return self.first_stage_end + (run.config.classifier_epochs if len(run.spec.stages) > 1 else 0)


@dataclass
class Learner:
    """The model and what trains it in the current stage."""

    model: torch.nn.Module
    stage: str
    optimizer: torch.optim.Optimizer | None  # None for a model fitted in closed form
    trained: torch.nn.Module  # the per-sample loss, wrapped for DDP and torch.compile
    scaler: torch.amp.GradScaler
    fitted_on: torch.Tensor | None = None  # the kept scans a closed-form fit used


def train(config: TrainConfig | None, run_dir: str, resume: bool = False, events: Events | None = None,
          device: str | torch.device | None = None) -> dict:
    """Train (or resume) the run in ``run_dir``; returns a summary dict (``stopped``
    after SIGTERM or RUN/STOP; Ctrl-C raises `Interrupted` instead, once what was
    trained is kept). ``device`` (a name or a `torch.device`) replaces the
    configuration's for this start only: a run trained on a GPU resumes on the CPU
    and back."""
    events = events or Events()
    files = RunFiles(os.path.abspath(utf8_name(run_dir)))
    if config is not None and config.data:
        # stored resolved: a start again from config.json reads the same data from any folder
        config = dataclasses.replace(config, data=os.path.realpath(config.data))
    stored, restart = None, False
    if resume and not os.path.isfile(files.checkpoint) and os.path.isfile(files.config):
        # a start that ended before its first checkpoint (killed while preparing
        # the scans): start it again from the configuration it wrote
        written = TrainConfig.from_file(files.config)
        written.pop(DATA_FINGERPRINT, None)
        config, restart = TrainConfig.from_dict(written, source=files.config), True
        warn(f"{files.folder}: no checkpoint yet (the run ended before its first one); starting it again from {CONFIG_NAME}")
    elif resume:
        stored = load_checkpoint(files.checkpoint)
        config = TrainConfig.from_dict(stored["config"], source=files.checkpoint)
        if stored.get("done"):
            raise UADError(f"{files.folder}: this run is complete ({stored['epoch']} epochs); start a new run to train more")
    owner = RunOwner(files)  # the run is this process's while it trains it; a failed fresh start leaves nothing
    remove_stale_temporaries(files.folder)
    wanted = device or config.device
    ranks = distributed.start(wanted)
    events.enabled_here = ranks.is_main
    failed = True
    try:
        if resume and ranks.is_main:
            owner.acquire()
        # the one place a training run picks its device; everything below is handed it
        device = pick_device(wanted, ranks.local_rank)
        with warnings.catch_warnings():
            if not ranks.is_main:  # rank 0 tells the user; the others would say it again
                warnings.simplefilter("ignore", UADWarning)
            summary = _train(config, files, stored, events, ranks, device, restart, owner)
        failed = summary.get("epoch") == 0 and summary.get("stopped")  # stopped before it trained anything
        distributed.barrier(ranks, device)  # the ranks leave together: none tears down its group while rank 0 still writes
        return summary
    finally:
        if ranks.is_main:
            owner.release(failed)
        distributed.stop(ranks)


def _train(config: TrainConfig, files: RunFiles, stored: dict | None, events: Events, ranks, device: torch.device,
           restart: bool, owner: RunOwner) -> dict:
    """Open the run, train epoch after epoch, calibrate. A stop (SIGTERM, Ctrl-C,
    RUN/STOP) during the epochs ends the run after the current step; while the
    scans are prepared or the model is calibrated, at once. Either way what was
    trained is kept in a checkpoint and a "stopped" event says where to go on."""
    last = None  # the state at the end of the last finished epoch (`snapshot`)
    begun = stored["epoch"] if stored is not None else 0  # the epochs trained before this start
    written = stored["epoch"] if stored is not None else None  # the epoch the checkpoint on disk holds
    bar = None
    with _StopRequest(files.stop) as stop_requested:
        try:
            run = open_run(config, files, stored, events, ranks, device, restart, owner)
            learner, state = start_training(run, stored)
            if stored is None and config.outlier_removal and config.removal_score == "audit":
                remove_by_audit(run, state)
            first_epoch = state.epoch + 1
            _announce(run, learner, state)
            last = snapshot(learner, state)
            bar = progress_bar(total=state.last_epoch(run), desc="train", unit="epoch", enabled=run.show_progress)
            bar.update(state.epoch)
            stop_requested.at_once = False  # from here a stop waits for the end of the step
            while state.epoch < state.last_epoch(run):
                epoch = state.epoch + 1
                started = time.perf_counter()
                begin_epoch(run, learner, state, epoch)
                losses = run_epoch(run, learner, state, epoch, stop_requested)
                record = epoch_record(run, learner, state, epoch, losses, time.perf_counter() - started)
                events.emit("epoch", **record, epochs=state.last_epoch(run))
                if epoch == first_epoch:
                    estimate(events, record["seconds"], epoch, state.last_epoch(run), run.device, config)
                if learner.stage == run.spec.stages[0]:
                    _stop_early(run, state, epoch)
                bar.total = state.last_epoch(run)
                bar.set_postfix(loss=f"{record['loss']:.4f}", kept=record["kept"], removed=record["removed"])
                bar.update()
                last = snapshot(learner, state)
                if epoch % config.checkpoint_every == 0:
                    written = write_run(run, last)
            bar.close()
            stop_requested.at_once = True
            if stop_requested():  # asked for during the last epoch
                raise _Stopped()
            if written != last["epoch"]:  # the training, kept before calibrating: a stop or a kill there loses none of it
                written = write_run(run, last)
            return finish(run, learner.model, state, last)
        except (_Stopped, KeyboardInterrupt):
            stop_requested.at_once = False  # already stopping: another signal must not cut the checkpoint short
            if bar is not None:
                bar.close()
            epoch = last["epoch"] if last is not None else begun
            if epoch > begun and written != epoch:  # trained since the last checkpoint
                write_run(run, last)
            stop_requested.clear()
            # what stays: a run with a checkpoint, or a start again from its config.json (not a fresh one that trained nothing)
            stays = epoch > 0 or (os.path.isfile(files.config) and not owner.wrote_config)
            events.emit("stopped", epoch=epoch, signal=stop_requested.cause,
                        resume=f"uad train --resume {files.folder}" if stays else None)
            summary = {"run": files.folder, "stopped": True, "epoch": epoch, "signal": stop_requested.cause}
            if stop_requested.cause == "SIGINT":  # the caller is interrupted too (a demo, an audit: not only this run)
                raise Interrupted(summary)
            return summary


# ---- the run and its model -----------------------------------------------------------


def open_run(config: TrainConfig, files: RunFiles, stored: dict | None, events: Events, ranks, device: torch.device,
             restart: bool, owner: RunOwner) -> Run:
    """The model's preset and the prepared scans, on ``device``. A scan that cannot
    be prepared (unreadable, no brain found, a failed registration) is left out of
    the run and listed in its audit, not fatal."""
    use_device(device)
    spec = model_spec(config.model)
    preset = make_preset(spec.preset, **spec.preset_options(config.preset_params))
    train_entries, val_entries = _entries(config, files, stored, spec, preset, ranks, device, restart, owner)
    show_progress = ranks.is_main and events.progress
    problems = {}
    workers = config.workers or ranks.workers_each()
    if ranks.enabled:
        _prepare_share(train_entries + val_entries, preset, workers, ranks, device)
    train_set = prepare_set(train_entries, preset, workers, progress=show_progress, problems=problems)
    val_set = prepare_set(val_entries, preset, workers, progress=show_progress, problems=problems) if val_entries else None
    excluded = [{"path": entry.path, "epoch": 0, "label": entry.label or "", "reason": problems[entry.path]}
                for entry in train_entries + val_entries if entry.path in problems]
    for row in excluded:
        events.emit("excluded", path=row["path"], reason=row["reason"])
    if config.batch_size is None:  # resolved once and stored with the run: a resumed run takes the same steps
        config.batch_size = training_batch_size(len(train_set.items))
    items = train_set.items
    if device.type == "cuda" and items.numel() * 4 < 0.5 * torch.cuda.mem_get_info(device)[0]:
        items = items.to(device)
    scans = train_set.entries + (val_set.entries if val_set is not None else [])
    return Run(config, spec, preset, files, events, ranks, device, amp_dtype(device, config.amp), train_set, val_set,
               items, excluded, fingerprint(scans))


def _prepare_share(entries: list[ScanEntry], preset: Preset, workers: int, ranks, device: torch.device) -> None:
    """Under DDP the ranks split the preparation: each prepares every world-th scan
    into the disk cache, then waits for the others; `prepare_set` then reads them
    all from the cache (a rank whose cache does not hold another's share, a node
    without a shared cache, prepares what is missing). Nothing to share without a
    cache."""
    if disk_cache_root() is None:
        return
    prepare_scans([ScanEntry(e.path, brain=e.brain) for e in entries[ranks.rank :: ranks.world]], preset, workers,
                  progress=False, problems={})
    distributed.barrier(ranks, device)  # every rank's share is in the cache


def _entries(config, files, stored, spec, preset, ranks, device, restart, owner) -> tuple[list[ScanEntry], list[ScanEntry]]:
    """The training and validation scans: the checkpoint's, or a new split of the
    data (the run folder created once they are known to be usable)."""
    if stored is not None:
        train_entries = [ScanEntry(**e) for e in stored["train_entries"]]
        val_entries = [ScanEntry(**e) for e in stored["validation"]["entries"]]
        check_same_data(files, config, train_entries + val_entries, stored.get(DATA_FINGERPRINT))
        return train_entries, val_entries
    entries = load_dataset(config.data)
    if restart:
        check_same_data(files, config, entries, stored_fingerprint(files))
    train_entries, val_entries = _split(entries, config)
    check_removal_score(config, spec, preset, len(train_entries), len(val_entries))
    created = False
    try:
        if ranks.is_main:
            create_run_dir(files, config, entries, owner, restart)
        created = True
    finally:
        distributed.agree(created, ranks, device, "creating the run folder")
    return train_entries, val_entries


def start_training(run: Run, stored: dict | None) -> tuple[Learner, TrainState]:
    """The model (fresh, or as the checkpoint left it), its optimiser and the state."""
    config, spec = run.config, run.spec
    torch.manual_seed(config.seed)
    model = spec.build(run.train_set.items.shape[2:], **config.model_params).to(run.device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if stored is None:
        state = TrainState(0, torch.ones(len(run.train_set), dtype=torch.bool), list(run.excluded), [], fresh_plateau(),
                           config.epochs)
    else:
        model.load_state_dict(stored["model"])
        state = TrainState(stored["epoch"], stored["kept"].bool(), stored["audit"], stored["history"],
                           stored.get("plateau", fresh_plateau()), stored.get("first_stage_end", config.epochs))
        torch.set_rng_state(stored["rng"])
    stage = state.stage_at(state.epoch, spec)
    optimizer = make_optimizer(run, model, stage, fresh=stored is None)
    if stored is not None and optimizer is not None:
        optimizer.load_state_dict(stored["optimizer"])
    scaler = make_scaler(run.device, run.autocast, stored.get("scaler") if stored is not None else None)
    return Learner(model, stage, optimizer, wrap(run, model), scaler), state


def make_scaler(device: torch.device, autocast: torch.dtype | None, stored: dict | None = None) -> torch.amp.GradScaler:
    """The loss scaler of float16 autocast on ``device`` (disabled for bfloat16 and
    float32), with the state a checkpoint kept (``stored``): a resumed run goes on
    with the loss scale it had reached instead of probing from 65,536 again."""
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    if stored and scaler.is_enabled():
        scaler.load_state_dict(stored)
    return scaler


def make_optimizer(run: Run, model: torch.nn.Module, stage: str, fresh: bool) -> torch.optim.Optimizer | None:
    """The optimiser of ``stage`` (the spec's), None for a model fitted in closed form."""
    if run.spec.closed_form:
        return None
    parameters = model.begin_stage(stage, fresh) if len(run.spec.stages) > 1 else model.parameters()
    return run.spec.optimizer(parameters, run.config, stage)


def wrap(run: Run, model: torch.nn.Module) -> torch.nn.Module:
    """The per-sample loss of ``model`` as the module trained: DDP across ranks, compiled on request."""
    trained = _PerSampleLoss(model)
    if run.spec.closed_form:
        return trained
    if run.ranks.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(trained)
    return torch.compile(trained) if run.config.compile else trained


def _announce(run: Run, learner: Learner, state: TrainState) -> None:
    run.events.emit("start", run=run.files.folder, model=run.config.model, scans=len(run.train_set),
                    validation=len(run.val_entries), epochs=state.last_epoch(run),
                    first_epoch=state.epoch + 1, device=describe(run.device), ranks=run.ranks.world,
                    batch_size=run.config.batch_size, parameters=sum(p.numel() for p in learner.model.parameters()))


# ---- one epoch ---------------------------------------------------------------------------


def begin_epoch(run: Run, learner: Learner, state: TrainState, epoch: int) -> None:
    """Before ``epoch``: switch to a new stage, re-initialise the weights after the
    epochs in ``reinit_at`` (first stage), refit a closed-form model on changed kept scans."""
    stage = state.stage_at(epoch, run.spec)
    if stage != learner.stage:
        learner.stage, learner.optimizer = stage, make_optimizer(run, learner.model, stage, fresh=True)
        learner.trained = wrap(run, learner.model)
        run.events.emit("stage", epoch=epoch, stage=stage, epochs=state.last_epoch(run))
    reinit_at = run.config.reinit_at
    if stage == run.spec.stages[0] and epoch - 1 in reinit_at:
        _reinitialise(learner.model, run.config.seed + SEED_STRIDE * (reinit_at.index(epoch - 1) + 1))
        learner.optimizer = make_optimizer(run, learner.model, stage, fresh=True)
        state.plateau = fresh_plateau()
        run.events.emit("reinit", epoch=epoch)
    if run.spec.closed_form and (learner.fitted_on is None or not torch.equal(learner.fitted_on, state.kept)):
        kept_items = run.train_set.items_of(state.kept)
        learner.model.fit(run.train_set.items[kept_items], run.train_set.regions[kept_items])
        learner.fitted_on = state.kept.clone()


def run_epoch(run: Run, learner: Learner, state: TrainState, epoch: int, stop_requested) -> torch.Tensor:
    """One pass over the kept scans' items in an order that depends only on (seed,
    epoch); returns each training scan's mean loss in it, (N,) float64 (NaN for a
    removed scan)."""
    ranks, n_items = run.ranks, len(run.train_set.items)
    generator = torch.Generator().manual_seed(run.config.seed * SEED_STRIDE + epoch)
    kept_items = run.train_set.items_of(state.kept)
    global_order = kept_items[torch.randperm(len(kept_items), generator=generator)]
    order, real = distributed.shard(global_order, ranks)
    item_loss = torch.zeros(n_items, dtype=torch.float64)
    item_seen = torch.zeros(n_items, dtype=torch.float64)
    per_rank_batch = max(1, run.config.batch_size // ranks.world)
    learner.trained.train()
    for start in range(0, len(order), per_rank_batch):
        if distributed.any_rank(stop_requested(), ranks, run.device):
            raise _Stopped()
        index, weight = order[start : start + per_rank_batch], real[start : start + per_rank_batch]
        # the mean over this step's real samples on all ranks (DDP averages the
        # ranks' gradients, hence the factor world)
        step_samples = min(per_rank_batch * ranks.world, len(global_order) - start * ranks.world)
        losses = _step(run, learner, index, weight, step_samples, epoch)
        item_loss.index_add_(0, index[weight], losses.detach().double().cpu()[weight])
        item_seen.index_add_(0, index[weight], torch.ones(int(weight.sum()), dtype=torch.float64))
    distributed.sum_across(item_loss, ranks, run.device)
    distributed.sum_across(item_seen, ranks, run.device)
    seen = item_seen > 0
    return mean_per_scan(item_loss[seen] / item_seen[seen], run.train_set.item_scan[seen], len(run.train_set))


def _step(run: Run, learner: Learner, index: torch.Tensor, weight: torch.Tensor, step_samples: int, epoch: int) -> torch.Tensor:
    """One optimiser step on the items ``index`` (``weight``: the real ones, not a
    rank's padding); returns their losses, (B,)."""
    device, closed_form = run.device, run.spec.closed_form
    x = run.items[index.to(run.items.device)].to(device, non_blocking=True)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device.type, dtype=run.autocast, enabled=run.autocast is not None), torch.set_grad_enabled(not closed_form):
        losses = learner.trained(x)
    if distributed.any_rank(not bool(torch.isfinite(losses.detach()).all()), run.ranks, device):  # every rank stops
        raise UADError(_diverged(run.files.folder, epoch, learner.optimizer, losses))
    if not closed_form:
        learner.optimizer.zero_grad(set_to_none=True)
        step_loss = (losses * weight.to(device)).sum() * (run.ranks.world / step_samples)
        learner.scaler.scale(step_loss).backward()
        learner.scaler.step(learner.optimizer)
        learner.scaler.update()
    return losses


def epoch_record(run: Run, learner: Learner, state: TrainState, epoch: int, losses: torch.Tensor, seconds: float) -> dict:
    """After the pass: outlier removal and the schedules (first stage), then the
    epoch's record, appended to the history."""
    epoch_mean = float(losses[state.kept].mean())
    first_stage = learner.stage == run.spec.stages[0]
    removal = remove_outliers(run, learner.model, state, epoch, losses, epoch_mean) if first_stage else None
    record = {"epoch": epoch, "loss": round(epoch_mean, 6), "kept": int(state.kept.sum()), "removed": removed(state.audit),
              "seconds": round(seconds, 3)}
    if removal:
        record["removal"] = removal
    if len(run.spec.stages) > 1:
        record["stage"] = learner.stage
    if first_stage:
        record.update(step_schedules(run, learner, state))
    state.history.append(record)
    state.epoch = epoch
    return record


def remove_outliers(run: Run, model, state: TrainState, epoch: int, losses: torch.Tensor, epoch_mean: float) -> str | None:
    """At a removal epoch, remove the kept scans whose removal score is above gamma x
    its mean (never so many that under `MIN_KEPT_SHARE` stay). Returns "on", "waiting"
    (for the loss to settle) or None (no removal epoch)."""
    config = run.config
    if not config.outlier_removal or epoch % config.outlier_every or config.removal_score == "audit":  # audit: before training
        return None
    waits = config.removal_start == "settled" and not run.spec.closed_form  # a closed-form fit is always converged
    if waits and not removal_allowed(state.history, epoch, epoch_mean, config):
        return "waiting"
    measured = losses if config.removal_score == "loss" else \
        removal_scores(model, run.train_set, run.val_set, run.device, run.autocast, config.removal_score)
    _take_out(run, state, measured, epoch, f"epoch {epoch}: outlier removal")
    return "on"


def remove_by_audit(run: Run, state: TrainState) -> None:
    """Before the first epoch, remove the training scans whose out-of-fold audit
    score is above gamma x the mean (`audit_ranking`); RUN/audit.csv ranks them all."""
    from uadcore.score.out_of_fold import write_audit_csv

    scores, ranking = audit_ranking(run.train_set, run.config.seed)
    if run.ranks.is_main:
        write_audit_csv(ranking, run.files.audit)
    rank_of = {row["path"]: row["rank"] for row in ranking}
    _take_out(run, state, scores, 0, "removal by the audit",
              reason=lambda entry: f"out-of-fold audit: rank {rank_of[entry.path]} of {len(ranking)}")


def _take_out(run: Run, state: TrainState, measured: torch.Tensor, epoch: int, what: str, reason=None) -> None:
    """Remove the kept scans whose removal score (``measured``, (N,)) is above gamma
    x its mean over the kept ones, unless under `MIN_KEPT_SHARE` of the training
    scans would stay (then none, with a warning naming ``what``); record them in the
    audit trail (with ``reason(entry)`` where given) and emit the event."""
    config, n_scans = run.config, len(run.train_set)
    remove, threshold, mean = find_outliers(measured, state.kept, config.gamma)
    would_keep = int((state.kept & ~remove).sum())
    if remove.any() and would_keep < MIN_KEPT_SHARE * n_scans:
        run.events.emit("removal_held", epoch=epoch, would_keep=would_keep, scans=n_scans)
        warn(f"{run.files.folder}: {what} would keep only {would_keep} of the {n_scans} training "
             f"scans (under {MIN_KEPT_SHARE:.0%}); removed none (is gamma {config.gamma:g} too low?)")
        remove = torch.zeros_like(state.kept)
    rows = []
    for index in torch.nonzero(remove, as_tuple=True)[0].tolist():
        entry, value = run.train_set.entries[index], float(measured[index])
        rows.append({"path": entry.path, "epoch": epoch, "loss": round(value, 6), "threshold": round(threshold, 6),
                     "loss_over_mean": round(value / mean, 4), "label": entry.label or "", "score": config.removal_score})
        if reason is not None:
            rows[-1]["reason"] = reason(entry)
    state.audit.extend(rows)
    state.kept = state.kept & ~remove
    if rows:
        run.events.emit("removed", epoch=epoch, threshold=round(threshold, 6), samples=rows)


def step_schedules(run: Run, learner: Learner, state: TrainState) -> dict:
    """The validation loss and, with it, the learning-rate plateau: {"val_loss", "lr"}
    (nothing without validation scans)."""
    if run.val_set is None:
        return {}
    record = {"val_loss": round(_validation_loss(learner.model, run.val_set, run.device, run.autocast), 6)}
    if learner.optimizer is not None:
        record["lr"] = follow_plateau(learner.optimizer, state.plateau, record["val_loss"], run.config.plateau_patience)
    return record


def _stop_early(run: Run, state: TrainState, epoch: int) -> None:
    """End the first stage now when the validation loss has not improved for
    ``early_stop_patience`` epochs (the next stage, if any, starts)."""
    patience = run.config.early_stop_patience
    if run.val_set is not None and patience and state.plateau["stale_run"] >= patience:
        run.events.emit("early_stop", epoch=epoch, best_val_loss=round(state.plateau["best_run"], 6))
        state.first_stage_end = epoch


# ---- checkpoints and the end -------------------------------------------------------------


def snapshot(learner: Learner, state: TrainState) -> dict:
    """The state at the end of the last finished epoch, as a checkpoint holds it (copies:
    training goes on)."""
    optimizer = learner.optimizer
    return {"epoch": state.epoch, "model": copy.deepcopy(learner.model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else {},
            "scaler": learner.scaler.state_dict(), "kept": state.kept.clone(), "audit": copy.deepcopy(state.audit), "history": copy.deepcopy(state.history),
            "rng": torch.get_rng_state(), "plateau": dict(state.plateau), "first_stage_end": state.first_stage_end}


def write_run(run: Run, saved: dict, done: bool = False) -> int:
    """The checkpoint of ``saved`` (a `snapshot`, with the healthy reference when
    ``done``) and its readable copies (rank 0 only); returns its epoch."""
    if not run.ranks.is_main:
        return saved["epoch"]
    train_entries = run.train_set.entries
    save_checkpoint(
        {**saved, "config": run.config.to_dict(), "preset": run.preset.to_dict(), "done": done,
         "train_entries": [vars(e) for e in train_entries],
         DATA_FINGERPRINT: run.data_fingerprint,
         "validation": {"entries": [vars(e) for e in run.val_entries], **saved.get("validation", {})}},
        run.files.checkpoint,
    )
    kept_entries = [e for e, k in zip(train_entries, saved["kept"]) if k]
    write_readable_copies(run.files, saved["audit"], saved["history"], kept_entries)
    run.events.emit("checkpoint", epoch=saved["epoch"], path=run.files.checkpoint)
    return saved["epoch"]


def finish(run: Run, model: torch.nn.Module, state: TrainState, last: dict) -> dict:
    """The healthy reference of the trained model (`calibrate_run`), the final
    checkpoint, and the run's summary."""
    validation, calibration = {}, {}
    n_validation = len(run.val_entries)
    if n_validation:
        scorer = Scorer.of_model(model, run.config.model, run.preset, run.device, run.config.amp)
        validation, calibration = calibrate_run(scorer, run.val_entries, run.config.workers or None, run.config.seed)
    if not n_validation:
        warn(f"{run.files.folder}: no validation scans held out: scores get no healthy percentile, thresholds or calibrated maps")
    elif not calibration and any(calibrates(kind) for kind in scorer.kinds):
        warn(f"{run.files.folder}: its maps stay raw (not calibrated): calibrating them needs at least {MIN_SCANS} healthy "
             f"validation scans on one grid, and this run held out {n_validation}; hold out more (--val-fraction) or add "
             "healthy scans")
    elif n_validation < FEW_REFERENCE_SCANS:
        warn(f"{run.files.folder}: the healthy reference (percentiles, the 1/5/10 % thresholds, the calibration) rests on "
             f"{n_validation} validation scans; it is rough below {FEW_REFERENCE_SCANS}: hold out more scans "
             "(--val-fraction) for a firmer one")
    write_run(run, {**last, "validation": validation, "calibration": calibration}, done=True)
    falling = still_falling(state.history, run.config)
    if falling is not None:
        run.events.emit("still_improving", epoch=state.epoch, fell_percent=round(100 * falling, 1))
    summary = {"run": run.files.folder, "device": str(run.device), "epochs": state.epoch, "scans": len(run.train_set), "kept": int(state.kept.sum()),
               "batch_size": run.config.batch_size, "still_improving": falling is not None, "validation": n_validation,
               "removed": removed(state.audit),
               "removed_unhealthy": sum(r["label"] == "unhealthy" for r in state.audit if was_removed(r)),
               "excluded": len(state.audit) - removed(state.audit),
               "final_loss": state.history[-1]["loss"] if state.history else None}
    run.events.emit("done", **summary)
    return summary


# ---- helpers -----------------------------------------------------------------------------


def _diverged(run_dir: str, epoch: int, optimizer, losses: torch.Tensor) -> str:
    """The error for a loss that is NaN or infinite: the weights diverged (a
    learning rate too high) and every later step would train on garbage."""
    lr = f" at learning rate {optimizer.param_groups[0]['lr']:g}" if optimizer is not None else ""
    values = losses.detach().float()
    bad = values[~torch.isfinite(values)]
    what = f"became {bad[0].item()}" if len(bad) else "became non-finite (on another rank)"
    return (f"{run_dir}: the training loss {what} in epoch {epoch}{lr}: the weights diverged; "
            "start a new run with a lower --lr (the last checkpoint holds the weights before this epoch)")


@torch.no_grad()
def _validation_loss(model, val_set: PreparedSet, device, autocast_dtype, batch_size: int = 8) -> float:
    """Mean per-sample loss of the validation items, model in eval mode."""
    model.eval()
    total = 0.0
    for start in range(0, len(val_set.items), batch_size):
        x = val_set.items[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            total += float(model.loss_per_sample(x).float().sum())
    model.train()
    return total / len(val_set.items)


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run, and what it trained is kept: ``summary`` is what `train`
    returns for a stop (its "stopped" event is out)."""

    def __init__(self, summary: dict):
        super().__init__()
        self.summary = summary


class _StopRequest:
    """A stop asked for: SIGTERM, Ctrl-C (SIGINT) or the STOP file at ``path``.
    While ``at_once`` a signal stops at once (raises `_Stopped`); otherwise it is
    noted, and the training loop asks (``stop_requested()``) after each step. A
    second Ctrl-C raises KeyboardInterrupt at once. ``cause``: what asked."""

    SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def __init__(self, path: str):
        self.path = path
        self.at_once = True
        self.cause = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            try:
                self.previous[number] = signal.signal(number, self._on_signal)
            except ValueError:  # not the main thread (e.g. called from a GUI worker thread)
                pass
        return self

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _on_signal(self, signum, frame):
        if self.cause == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.cause = self.SIGNALS[signum]
        if self.at_once:
            raise _Stopped()
        if signum == signal.SIGINT:
            warn("stopping after this step, keeping what was trained (Ctrl-C again to quit at once)")

    def __call__(self) -> bool:
        if self.cause is None and os.path.exists(self.path):
            self.cause = "STOP"
        return self.cause is not None

    def clear(self):
        if os.path.exists(self.path):
            os.remove(self.path)


def _reinitialise(model: torch.nn.Module, seed: int) -> None:
    """Fresh weights (every layer's own initialiser), drawn from ``seed``."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    torch.set_rng_state(state)


def _split(entries: list[ScanEntry], config: TrainConfig) -> tuple[list[ScanEntry], list[ScanEntry]]:
    """Hold out ``val_fraction`` of the scans not labelled unhealthy, drawn with the
    run's seed: at least `MIN_SCANS` (what calibrating the maps needs) when as many
    are left to train on, else at least one when there are 5 or more."""
    candidates = [i for i, e in enumerate(entries) if e.label != "unhealthy"]
    n_val = int(round(config.val_fraction * len(candidates)))
    if config.val_fraction > 0 and len(candidates) >= 2 * MIN_SCANS:
        n_val = max(MIN_SCANS, n_val)  # a pilot of 30 scans at 10 % would hold out 3: every map uncalibrated
    elif config.val_fraction > 0 and len(candidates) >= 5:
        n_val = max(1, n_val)
    rng = random.Random(config.seed)
    held_out = set(rng.sample(candidates, n_val)) if n_val else set()
    train_entries = [e for i, e in enumerate(entries) if i not in held_out]
    if not train_entries:
        raise UADError(f"{config.data}: no scans left to train on after holding out validation scans")
    return train_entries, [e for i, e in enumerate(entries) if i in held_out]
