"""What the Slicer module must install before UAD runs, decided without Slicer:
which requirements are missing or too old (``importlib.metadata`` and
``packaging``, as SlicerNNUnet's install logic does), and the pip arguments that
install them without letting pip replace the CUDA build of torch that the PyTorch
extension installed (a constraint pins the installed torch)."""

from __future__ import annotations

import importlib.metadata
import os
import tempfile

from packaging.requirements import Requirement


def unmet(requirements: list[str]) -> list[str]:
    """The requirements (``"monai>=1.3"``, ...) not installed, or installed in a
    version outside their specifier."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def pip_arguments(requirements: list[str], folder: str | None = None) -> list[str]:
    """Arguments for ``pip install`` of ``requirements`` that keep the installed
    torch: a constraints file (in ``folder``, default a new temporary folder) pins
    it to its exact version, so a dependency asking for torch cannot upgrade it."""
    arguments = list(requirements)
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return arguments
    folder = folder or tempfile.mkdtemp(prefix="uad-pip-")
    constraints = os.path.join(folder, "constraints.txt")
    with open(constraints, "w", encoding="utf-8") as handle:
        handle.write(f"torch=={torch_version}\n")
    return arguments + ["--constraint", constraints]
