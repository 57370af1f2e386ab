"""The Slicer module's install decisions, made without Slicer: what is missing or
too old, and pip arguments that never replace the installed torch."""

import importlib.metadata

from SlicerUADLib.install import pip_arguments, unmet


def test_installed_requirements_are_met_and_missing_or_old_ones_are_not():
    numpy = importlib.metadata.version("numpy")
    assert unmet([f"numpy>={numpy}", "scipy>=1.0"]) == []
    assert unmet(["numpy>=999", "surely-not-a-package-uad>=1", "scipy"]) == ["numpy>=999", "surely-not-a-package-uad>=1"]


def test_pip_keeps_the_installed_torch(tmp_path):
    arguments = pip_arguments(["monai>=1.3", "deepbet>=1.0.2"], folder=str(tmp_path))
    assert arguments[:2] == ["monai>=1.3", "deepbet>=1.0.2"] and arguments[2] == "--constraint"
    assert open(arguments[3]).read() == f"torch=={importlib.metadata.version('torch')}\n"
