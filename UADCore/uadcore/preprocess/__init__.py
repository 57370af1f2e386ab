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


def make_preset(name: str, **params) -> Preset:
    """A preset by name, with options overriding its defaults."""
    if name not in PRESETS:
        raise UADError(f"unknown preprocessing preset '{name}'; presets are {', '.join(PRESETS)}")
    return PRESETS[name](**params)


def preset_from_dict(stored: dict) -> Preset:
    """The preset stored in a checkpoint; refuses a version this UAD does not have."""
    preset = make_preset(stored["name"], **stored.get("params", {}))
    if stored.get("version") != preset.version:
        raise UADError(
            f"preset {stored['name']} version {stored.get('version')} is not the version this "
            f"UAD implements ({preset.version}); use the UAD release that trained the model"
        )
    return preset


__all__ = [
    "PRESETS",
    "Prepared",
    "Preset",
    "make_preset",
    "preset_from_dict",
    "resample",
    "scale_intensity",
]
