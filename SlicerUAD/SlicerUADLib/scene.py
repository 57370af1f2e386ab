"""MRML scenes outside the Slicer application, and volume nodes as arrays.

`StandaloneScene` builds what Slicer's application would: a `vtkMRMLScene` with an
application logic, the default colour nodes, the Colors and Volumes module logics
and the slice view presets, from the `slicer-core` wheel. `uad gui` and the tests
use it; inside Slicer, the application's own scene and logics are used instead.
"""

from __future__ import annotations

import numpy as np


class StandaloneScene:
    """A real MRML scene with the logics volume loading and slice rendering need."""

    def __init__(self):
        import slicer

        self.scene = slicer.vtkMRMLScene()
        self.application_logic = slicer.vtkSlicerApplicationLogic()
        self.application_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.application_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.application_logic.SetModuleLogic("Colors", self.color_logic)
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLApplicationLogic(self.application_logic)
        self.volumes_logic.SetMRMLScene(self.scene)
        self.application_logic.SetModuleLogic("Volumes", self.volumes_logic)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)

    def close(self) -> None:
        """Detach the logics from the scene and empty it (call before dropping it)."""
        self.volumes_logic.SetMRMLScene(None)
        self.color_logic.SetMRMLScene(None)
        self.application_logic.SetMRMLScene(None)
        self.scene.Clear(1)

    def load_volume(self, path: str, name: str | None = None):
        """Load a scan file with Slicer's own reader; returns the volume node."""
        import os

        name = name or os.path.basename(path).split(".")[0]
        node = self.volumes_logic.AddArchetypeVolume(path, name, 0)
        if node is None:
            raise OSError(f"{path}: 3D Slicer's reader could not load it")
        return node


def ijk_to_ras(node) -> np.ndarray:
    """A volume node's 4x4 voxel-index-to-RAS matrix."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def volume_array(node) -> np.ndarray:
    """A scalar volume node's voxels as a numpy array indexed [i, j, k] (a copy)."""
    from vtk.util.numpy_support import vtk_to_numpy

    image = node.GetImageData()
    i, j, k = image.GetDimensions()
    flat = vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(k, j, i).transpose(2, 1, 0).copy()


def scan_from_node(node):
    """A loaded volume node as a uadcore `Scan`: its voxels and RAS geometry, named
    after the node's file (or the node when it has none)."""
    from uadcore.io import Grid, Scan

    array = volume_array(node).astype(np.float32)
    storage = node.GetStorageNode()
    path = storage.GetFileName() if storage is not None and storage.GetFileName() else node.GetName()
    return Scan(array, Grid(array.shape, ijk_to_ras(node)), path)
