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

import torch

from uadcore.errors import UADError
from uadcore.io.atomic import atomic_path

FORMAT = "uad-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
JSON_FIELDS = ("config", "preset", "history", "audit", "train_entries", "validation")


def save_checkpoint(state: dict, path: str) -> str:
    """Write ``state`` atomically. JSON_FIELDS are stored as JSON text."""
    payload = {"format": FORMAT, "version": VERSION}
    for key, value in state.items():
        payload[key] = json.dumps(value) if key in JSON_FIELDS else value
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a checkpoint safely; bad files raise UADError naming the file."""
    if not os.path.isfile(path):
        raise UADError(f"{path}: no checkpoint here (is this a UAD run folder?)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "forbidden content"
        raise UADError(f"{path}: refused to load: it holds objects other than weights and plain data ({first})") from error
    except Exception as error:
        raise UADError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UADError(f"{path}: is not a UAD checkpoint")
    if payload.get("version") != VERSION:
        raise UADError(f"{path}: checkpoint version {payload.get('version')} is not supported (this UAD reads {VERSION})")
    for key in JSON_FIELDS:
        if key in payload:
            payload[key] = json.loads(payload[key])
    return payload
