"""The extension's CMake is valid and the package declares what the issue asks."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_configures(tmp_path):
    result = subprocess.run(["cmake", "-S", ROOT, "-B", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "project(UnsupervisedAnomalyDetection)" in open(os.path.join(ROOT, "CMakeLists.txt")).read()


def test_setup_declares_torch_loosely_and_the_command():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert "uad = uadcore.cli:main" in setup
    from uadcore.requirements import REQUIREMENTS, TORCH

    assert TORCH == "torch>=2.1" and TORCH in REQUIREMENTS


def test_one_list_of_requirements_for_setup_and_the_slicer_module():
    """setup.py and the module derive theirs from uadcore.requirements (matplotlib
    was once missing from the module's copy, and evaluate failed inside Slicer)."""
    import importlib.metadata
    import re

    from uadcore.requirements import REQUIREMENTS

    installed = [re.sub(r"\s+", "", r) for r in importlib.metadata.requires("uadcore") if "extra ==" not in r]
    assert sorted(installed, key=str.lower) == sorted(REQUIREMENTS, key=str.lower)
    assert "matplotlib>=3.6" in REQUIREMENTS
    module = open(os.path.join(ROOT, "SlicerUAD", "SlicerUAD.py")).read()
    assert "from uadcore.requirements import REQUIREMENTS" in module
    assert not re.search(r'"(monai|nibabel|matplotlib|deepbet)[<>=]', module)  # no copied list


def test_the_module_build_lists_every_python_file():
    listed = open(os.path.join(ROOT, "SlicerUAD", "CMakeLists.txt")).read()
    library = os.path.join(ROOT, "SlicerUAD", "SlicerUADLib")
    files = sorted(f"SlicerUADLib/{name}" for name in os.listdir(library) if name.endswith(".py"))
    assert files and all(f"  {name}\n" in listed for name in files + ["${MODULE_NAME}.py"])
    assert os.path.isfile(os.path.join(ROOT, "SlicerUAD", "Resources", "Icons", "SlicerUAD.png"))
    assert "UADCore/uadcore/*.py" in listed  # the engine is bundled with the module


def test_extension_metadata_and_module_file():
    import json

    top = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    for needed in ('EXTENSION_CATEGORY "Neuroimaging"', 'EXTENSION_DEPENDS "PyTorch"', "find_package(Slicer", "add_subdirectory(SlicerUAD)",
                   "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert needed in top
    entry = json.load(open(os.path.join(ROOT, "UnsupervisedAnomalyDetection.json")))
    assert entry["category"] == "Neuroimaging" and entry["build_dependencies"] == ["PyTorch"]
    source = open(os.path.join(ROOT, "SlicerUAD", "SlicerUAD.py")).read()
    compile(source, "SlicerUAD.py", "exec")  # imports qt/slicer: only Slicer can run it
    for name in ("class SlicerUAD(ScriptedLoadableModule)", "class SlicerUADWidget(ScriptedLoadableModuleWidget)",
                 "class SlicerUADTest(ScriptedLoadableModuleTest)", "installTorch(", "pip_install", "tryWithErrorDisplay",
                 "pip_arguments(missing)", "unmet(REQUIREMENTS)"):
        assert name in source


def test_the_slicer_self_test_checks_its_dependencies_before_importing_them():
    import ast

    tree = ast.parse(open(os.path.join(ROOT, "SlicerUAD", "SlicerUAD.py")).read())
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SlicerUADTest")
    run_test = next(n for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name == "runTest")
    calls = [n.func.id if isinstance(n.func, ast.Name) else n.func.attr
             for n in sorted((n for n in ast.walk(run_test) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))]
    assert calls.index("ensure_dependencies") < calls.index("test_train_and_map")
    # the module's top level imports nothing that needs torch or monai
    top_imports = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    top_imports += [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert not [m for m in top_imports if m and m.split(".")[0] in ("torch", "monai", "SlicerUADLib")]
    assert "uadcore.requirements" in top_imports  # plain data


def test_the_wheel_carries_the_pretrained_models_and_their_cards(tmp_path):
    """`pip install uadcore` (a wheel, not this checkout) must bring the shipped
    models: package data, not only files beside the code."""
    import sys
    import zipfile

    from uadcore import pretrained

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), ROOT],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = [name for name in os.listdir(tmp_path) if name.endswith(".whl")]
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    for model in pretrained.available():
        for part in (pretrained.CHECKPOINT, pretrained.CARD):
            assert f"uadcore/pretrained/{model}/{part}" in names
