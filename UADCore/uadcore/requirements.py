"""What UADCore needs installed: the one list that setup.py installs and the Slicer
module installs at first use (derived from it, never copied). Plain data, no
imports: setup.py reads this file before anything is installed."""

TORCH = "torch>=2.1"
REQUIREMENTS = [
    TORCH,
    "numpy>=1.24",
    "scipy>=1.10",
    "nibabel>=5.0",
    "SimpleITK>=2.2",
    "monai>=1.3",
    "einops>=0.6",  # MONAI's transformer blocks (the MAE) need it
    "scikit-learn>=1.3",
    "nilearn>=0.10",
    "tqdm>=4.60",
    "threadpoolctl>=3",
    "matplotlib>=3.6",  # report pictures and ROC plots
    "deepbet>=1.0.2",  # skull stripping; its weights ship inside the wheel
    "packaging>=21",  # the Slicer module's version checks
]
