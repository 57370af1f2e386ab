"""Checkpoints: everything a run needs to resume or to score, in one file that loads
without executing code.

The file is a `torch.save` of a dict holding only tensors, numbers, strings and
containers of those (metadata travels as JSON text), and it is read back with
``torch.load(weights_only=True)``, which refuses anything else: a crafted file can
not run code. Writes go to a temporary file that replaces the old one in one
rename, so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass

import torch

from uadcore.errors import UADError
from uadcore.io.atomic import atomic_path, write_error
from uadcore.io.run_files import RunFiles

FORMAT = "uad-checkpoint"
VERSION = 1
JSON_FIELDS = ("config", "preset", "history", "audit", "train_entries", "validation")


def save_checkpoint(state: dict, path: str) -> str:
    """Write ``state`` atomically. JSON_FIELDS are stored as JSON text. A write
    that fails (a full disk) keeps the previous checkpoint and raises UADError."""
    payload = {"format": FORMAT, "version": VERSION}
    for key, value in state.items():
        payload[key] = json.dumps(value) if key in JSON_FIELDS else value
    try:
        with atomic_path(path) as temporary:
            torch.save(payload, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
        raise write_failure(path, error) from error
    return path


def write_failure(path: str, error: Exception) -> UADError:
    """The one-line error for a run file that could not be written (`write_error`)
    and that nothing older was lost."""
    folder = os.path.dirname(os.path.abspath(path))
    return UADError(f"{write_error(path, error)}; the previous checkpoint is kept: "
                    f"free space and continue with uad train --resume {folder}")


@dataclass
class FinishedRun:
    """What scoring needs of a finished run: its model (name, options, weights), its
    preprocessing preset (`Preset.to_dict`), its healthy reference (the validation
    dict and the per-kind calibration states of `uadcore.score.calibrate`) and the
    paths of the scans it trained on."""

    folder: str
    model: str
    model_options: dict
    amp: bool
    preset: dict
    weights: dict
    validation: dict
    calibration: dict
    trained_on: set

    @classmethod
    def load(cls, run_dir: str) -> "FinishedRun":
        folder = os.path.abspath(run_dir)
        state = load_run(folder)
        if not state.get("done"):
            raise UADError(f"{folder}: training has not finished (epoch {state['epoch']}); resume it first")
        config = state["config"]
        return cls(folder, config["model"], config.get("model_params", {}), config.get("amp", True), state["preset"],
                   state["model"], state.get("validation", {}), state.get("calibration", {}),
                   {entry["path"] for entry in state["train_entries"]})


def load_run(run_dir: str) -> dict:
    """The checkpoint of the run folder ``run_dir`` (see `load_checkpoint`)."""
    return load_checkpoint(RunFiles(run_dir).checkpoint)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a checkpoint safely; bad files raise UADError naming the file."""
    if not os.path.isfile(path):
        raise UADError(f"{path}: no checkpoint here (is this a UAD run folder?)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise UADError(f"{path}: is not a UAD checkpoint (not a file torch.save wrote)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, which would run the file's code: never pass that on
        found = [line.strip() for line in str(error).splitlines() if "unsupported" in line.lower() and "weights_only" not in line]
        detail = f" ({found[0].rstrip('.')})" if found else ""
        raise UADError(f"{path}: refused to load: it holds objects other than weights and plain data, which could run code{detail}") from error
    except Exception as error:
        raise UADError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {_first_line(error)})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UADError(f"{path}: is not a UAD checkpoint")
    if payload.get("version") != VERSION:
        raise UADError(f"{path}: checkpoint version {payload.get('version')} is not supported (this UAD reads {VERSION})")
    for key in JSON_FIELDS:
        if key in payload:
            try:
                payload[key] = json.loads(payload[key])
            except (TypeError, ValueError) as error:
                raise UADError(f"{path}: its {key} is not valid JSON ({error}); the checkpoint is damaged") from error
    return payload


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
