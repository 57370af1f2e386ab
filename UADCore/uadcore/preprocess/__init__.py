"""Preprocessing presets: scan -> model inputs on a physical model grid, and model
outputs -> maps on the scan's own grid.

    preset = make_preset("brain3d-behrendt")
    prepared = preset.prepare(read_scan(path))
    batch = prepared.inputs()                          # model inputs
    volume = prepared.assemble(model_outputs)          # on the model grid
    on_scan = prepared.to_scan(volume)                 # on the scan's grid
"""

from uadcore.errors import UADError
from uadcore.preprocess.brain3d import Brain3DBehrendt
from uadcore.preprocess.patches2d import Patches2D
from uadcore.preprocess.preset import Prepared, Preset, scale_intensity
from uadcore.preprocess.resample import resample
from uadcore.preprocess.slices2d import Brain2DSlices

PRESETS = {preset.name: preset for preset in (Brain3DBehrendt, Brain2DSlices, Patches2D)}


def make_preset(name: str, version: int | None = None, **params) -> Preset:
    """A preset by name (its newest version unless told), with options overriding its defaults."""
    if name not in PRESETS:
        raise UADError(f"unknown preprocessing preset '{name}'; presets are {', '.join(PRESETS)}")
    return PRESETS[name](version=version, **params)


def preset_from_dict(stored: dict) -> Preset:
    """The preset stored in a checkpoint, at the version it was trained with;
    refuses a version this UAD does not have."""
    name, version = stored["name"], stored.get("version")
    newest = PRESETS[name].version if name in PRESETS else None
    if newest is None or not isinstance(version, int) or not 1 <= version <= newest:
        raise UADError(
            f"preset {name} version {version} is not a version this UAD implements"
            f"{f' (1 to {newest})' if newest else ''}; use the UAD release that trained the model"
        )
    return make_preset(name, version, **stored.get("params", {}))


__all__ = [
    "PRESETS",
    "Prepared",
    "Preset",
    "make_preset",
    "preset_from_dict",
    "resample",
    "scale_intensity",
]
