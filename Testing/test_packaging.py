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
    assert '"torch>=2.1"' in setup
    assert "uad = uadcore.cli:main" in setup
