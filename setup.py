"""Installs UADCore (the `uadcore` package and the `uad` command) and the testable
part of the Slicer module (`SlicerUADLib`, used by `uad gui`)."""

import re
import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "(.+)"', (HERE / "UADCore/uadcore/__init__.py").read_text()).group(1)
REQUIREMENTS = runpy.run_path(str(HERE / "UADCore/uadcore/requirements.py"))["REQUIREMENTS"]  # the one list

setup(
    name="uadcore",
    version=VERSION,
    description="Unsupervised anomaly detection for brain MRI and other medical images",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"uadcore": "UADCore/uadcore", "SlicerUADLib": "SlicerUAD/SlicerUADLib"},
    packages=["uadcore", *("uadcore." + p for p in find_packages("UADCore/uadcore")), "SlicerUADLib"],
    # the models shipped inside the package (uadcore.pretrained): weights under CC BY-SA 3.0, see each MODEL_CARD.md
    package_data={"uadcore": ["pretrained/*/checkpoint.pt", "pretrained/*/MODEL_CARD.md"]},
    install_requires=REQUIREMENTS,
    extras_require={
        "test": ["pytest>=7", "pytest-qt>=4"],
        "gui": ["PyQt5>=5.15", "slicer-core"],
    },
    entry_points={
        "console_scripts": ["uad = uadcore.cli:main"],
        "uad.commands": ["gui = SlicerUADLib.command:add_parser"],  # `uad gui`: the engine never imports SlicerUADLib
    },
)
