"""An on-disk cache of prepared scans, so a second run (another model, another γ,
evaluation after training) does not read and resample its scans again.

Keyed by the *content* of the scan and mask files and by the preset (name,
version, options): an edited or replaced file, or another preprocessing, is a
miss. Entries are plain ``.npy`` files opened memory-mapped, written into a
temporary folder renamed into place (atomic; concurrent runs cannot see half an
entry), with a checksum verified on every read: a damaged entry is prepared again
and replaced. The cache lives in ``$UAD_CACHE_DIR`` or ``$XDG_CACHE_HOME/uad/prepared``
(``~/.cache/uad/prepared``), never beside the scans; ``UAD_CACHE=off`` turns it off.
Its ``brain/`` folder holds the brain preparation's masks and registrations
(`uadcore.preprocess.brain`). An entry that cannot be written (a full disk) is
skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from uadcore.errors import warn
from uadcore.io.atomic import remove_stale_temporaries
from uadcore.io.grid import Grid
from uadcore.preprocess.prepared import Prepared
from uadcore.preprocess.warp import Warp

FORMAT = 2  # bump when what is stored changes (2: the registration and the preparation's quality; a warp is an optional array)


def cache_root() -> str | None:
    """The cache folder, or None when caching is off."""
    if os.environ.get("UAD_CACHE", "").lower() in ("off", "0", "no", "false"):
        return None
    if os.environ.get("UAD_CACHE_DIR"):
        return os.environ["UAD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "uad", "prepared")


def content_key(paths: list[str | None], preset_dict: dict, brain_revision: int | str) -> str:
    """SHA-256 of the files' bytes (a DICOM folder: all its files, by name), the
    preset and the brain preparation's revision (`uadcore.preprocess.brain.revision`)."""
    recipe = {"format": FORMAT, "preset": preset_dict, "brain_revision": brain_revision}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in paths:
        digest.update(b"\0file\0")
        if not path:
            continue
        files = sorted(os.path.join(path, n) for n in os.listdir(path)) if os.path.isdir(path) else [path]
        for name in files:
            digest.update(os.path.basename(name).encode() + b"\0")
            with open(name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def has(root: str, key: str) -> bool:
    """Whether the cache holds an entry ``key`` (not yet verified: `load_entry` does that)."""
    return os.path.isdir(_folder(root, key))


def load(root: str, key: str, preset):
    """(Prepared, mask or None) from the cache, arrays memory-mapped; None on a miss."""
    entry = load_entry(root, key)
    if entry is None:
        return None
    arrays, meta = entry
    try:
        prepared = Prepared(arrays["image"], np.asarray(arrays["region"]), _grid(meta["grid"]), _grid(meta["scan_grid"]),
                            preset, np.asarray(arrays["units"]), np.asarray(meta["to_template"], float), meta["quality"],
                            load_warp(arrays, meta))
    except (KeyError, TypeError, ValueError):
        return None
    return prepared, (np.asarray(arrays["mask"]) if "mask" in arrays else None)


def store(root: str, key: str, prepared, mask) -> None:
    """Write one prepared scan (and its lesion mask on the model grid)."""
    arrays = {"image": prepared.image, "region": prepared.region, "units": prepared.units}
    if mask is not None:
        arrays["mask"] = mask
    meta = {"grid": _grid_record(prepared.grid), "scan_grid": _grid_record(prepared.scan_grid),
            "to_template": np.asarray(prepared.to_template).tolist(), "quality": prepared.quality}
    store_entry(root, key, *with_warp(arrays, meta, prepared.warp))


def with_warp(arrays: dict, meta: dict, warp: Warp | None) -> tuple[dict, dict]:
    """An entry's arrays and meta with ``warp`` added (unchanged when None)."""
    if warp is None:
        return arrays, meta
    return {**arrays, "warp": warp.displacement}, {**meta, "warp_grid": _grid_record(warp.grid)}


def load_warp(arrays: dict, meta: dict) -> Warp | None:
    """The warp an entry holds (`with_warp`), or None."""
    return Warp(_grid(meta["warp_grid"]), np.asarray(arrays["warp"])) if "warp" in arrays else None


def load_entry(root: str, key: str) -> tuple[dict, dict] | None:
    """(arrays memory-mapped, meta) of the entry ``key`` under ``root``; None on a miss.
    An entry that is not as it was written (its checksum differs: a damaged disk, a
    truncated file, an edit) is removed, with one warning line, so that it is
    prepared and stored again."""
    folder = _folder(root, key)
    if not os.path.isdir(folder):
        return None
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as handle:
            meta = json.load(handle)
        arrays = {name: np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r") for name in meta["arrays"]}
        intact = meta.get("checksum") == checksum(arrays, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        arrays, meta, intact = None, {}, False
    if intact:
        return arrays, meta
    if "checksum" in meta or not meta:  # not an entry of an older UAD, which had no checksum: damaged
        warn(f"cache {root}: entry {key} is damaged (not as it was written); preparing it again")
    _remove_entry(folder)
    return None


def checksum(arrays: dict, meta: dict) -> str:
    """A digest of an entry's arrays (name, type, shape, bytes) and of its meta."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _remove_entry(folder: str) -> None:
    """Remove an entry: first renamed aside (one rename: no reader sees half of it)."""
    aside = f"{os.path.dirname(folder)}/.incoming-{os.getpid()}-removed-{os.path.basename(folder)}"
    try:
        os.rename(folder, aside)
    except OSError:
        return  # gone already (another process removed it)
    shutil.rmtree(aside, ignore_errors=True)


def store_entry(root: str, key: str, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON) as the entry ``key``
    under ``root``, with their `checksum`, atomically: a temporary folder renamed
    into place (a concurrent writer of the same entry wins)."""
    folder = _folder(root, key)
    if os.path.isdir(folder):
        return
    temporary = None
    try:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        remove_stale_temporaries(os.path.dirname(folder))  # what a killed writer left here
        temporary = tempfile.mkdtemp(prefix=f".incoming-{os.getpid()}-", dir=os.path.dirname(folder))
        for name, array in arrays.items():
            np.save(os.path.join(temporary, f"{name}.npy"), np.ascontiguousarray(array))
        meta = json.loads(json.dumps({**meta, "arrays": list(arrays)}))  # as it will be read back
        with open(os.path.join(temporary, "meta.json"), "w", encoding="utf-8") as handle:
            json.dump({**meta, "checksum": checksum(arrays, meta)}, handle)
        os.rename(temporary, folder)
    except OSError as error:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        if not os.path.isdir(folder):  # not "another process stored it first"
            warn(f"cache {root}: entry not written ({error.strerror or error}); going on without it")


def _folder(root: str, key: str) -> str:
    return os.path.join(root, key[:2], key)


def _grid_record(grid: Grid) -> dict:
    return {"shape": list(grid.shape), "affine": np.asarray(grid.affine).tolist()}


def _grid(values: dict) -> Grid:
    return Grid(tuple(values["shape"]), np.asarray(values["affine"], float))
