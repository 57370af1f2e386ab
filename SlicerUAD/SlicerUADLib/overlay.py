"""Scene logic for anomaly maps: every function takes the MRML scene (or nodes of
it) explicitly, never ``slicer.mrmlScene``, so it runs in Slicer and on a
`StandaloneScene` alike.

- `add_map_volume`: a map as a scalar volume in its scan's exact geometry;
- `show_map`: the map over its scan in every slice view, coloured with inferno
  (built from values: slicer-core ships no such colour file), window/level, a
  threshold below which the map is transparent, the foreground opacity;
- `color_legend`: the map's colour bar in the views (a `vtkMRMLColorLegendDisplayNode`),
  titled with what the values mean;
- `show_outline`: a ground-truth mask as an outline over the map;
- `map_to_segmentation`: a thresholded map as a segmentation;
- `peak_ras`, `hot_spots`, `jump_to`: where a map is highest, the peaks of its regions
  above a threshold, and every slice view moved to one.
"""

from __future__ import annotations

import numpy as np

COLOR_NODE_NAME = "UAD Inferno"
MAP_ATTRIBUTE = "UAD.map"  # set on every map volume node, so a map is never offered as a scan
# the thresholded map's segment, in Slicer's terminology (SNOMED CT): a morphologically
# altered structure, of type lesion; what it is beyond that is for a reader to say
TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure"
               "~SCT^52988006^Lesion~^^~Anatomic codes - DICOM master list~^^~^^")
UNIT_ATTRIBUTE = "UAD.unit"  # what a map's values are, for its legend
CALIBRATED_UNIT = "z, healthy-calibrated"
RAW_UNIT = "raw, not calibrated"
# matplotlib's inferno at 17 evenly spaced points (perceptually uniform, readable
# in grey); the table interpolates 256 entries between them
INFERNO = (
    (0.001, 0.000, 0.014), (0.042, 0.028, 0.141), (0.129, 0.047, 0.291), (0.238, 0.037, 0.396),
    (0.342, 0.062, 0.429), (0.441, 0.099, 0.432), (0.541, 0.135, 0.415), (0.640, 0.171, 0.381),
    (0.736, 0.216, 0.330), (0.822, 0.275, 0.266), (0.894, 0.353, 0.194), (0.947, 0.449, 0.115),
    (0.978, 0.558, 0.035), (0.988, 0.675, 0.065), (0.975, 0.798, 0.206), (0.948, 0.917, 0.411),
    (0.988, 0.998, 0.645),
)


def inferno_color_node(scene, entries: int = 256):
    """The scene's inferno colour table node, made on first use."""
    import slicer

    existing = scene.GetFirstNodeByName(COLOR_NODE_NAME)
    if existing is not None:
        return existing
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(entries)
    anchors = np.asarray(INFERNO)
    positions = np.linspace(0.0, 1.0, len(anchors))
    for index, where in enumerate(np.linspace(0.0, 1.0, entries)):
        rgb = [float(np.interp(where, positions, anchors[:, channel])) for channel in range(3)]
        node.SetColor(index, f"{index}", *rgb, 1.0)
    node.SetAttribute("Category", "UAD")
    scene.AddNode(node)
    return node


def add_map_volume(scene, scan_node, array: np.ndarray, name: str):
    """Add ``array`` (indexed [i, j, k] on the scan's own voxel grid, as
    `ScanScore.scan_map` gives it) as a scalar volume with the scan node's exact
    IJK-to-RAS geometry. Returns the new volume node."""
    import slicer

    node = _on_scan_grid(scene, scan_node, np.asarray(array, dtype=np.float32), slicer.vtkMRMLScalarVolumeNode(), name, "map")
    node.SetAttribute(MAP_ATTRIBUTE, "1")
    return node


def _on_scan_grid(scene, scan_node, array: np.ndarray, node, name: str, what: str):
    """``node`` (a new volume node) named ``name``, holding ``array`` (indexed [i, j,
    k] on the scan node's voxel grid) in the scan node's IJK-to-RAS geometry, added
    to the scene. A ``what`` of another shape is a ValueError."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    dims = scan_node.GetImageData().GetDimensions()
    if tuple(array.shape) != tuple(dims):
        raise ValueError(f"{name}: {what} shape {array.shape} differs from the scan's voxel grid {tuple(dims)}")
    image = vtk.vtkImageData()
    image.SetDimensions(*dims)
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(array.transpose(2, 1, 0)).ravel(), deep=True))
    node.SetName(name)
    matrix = vtk.vtkMatrix4x4()
    scan_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image)
    scene.AddNode(node)
    return node


def show_map(scene, map_node, scan_node, opacity: float = 0.5, threshold: float | None = None,
             window_level: tuple[float, float] | None = None):
    """Overlay ``map_node`` on ``scan_node`` in every slice view: inferno colours,
    window/level (default: the map's 1st to 99.9th percentile), transparent below
    ``threshold`` (default: the window's low end), foreground ``opacity``."""
    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    display = map_node.GetDisplayNode()
    if display is None:
        display = slicer.vtkMRMLScalarVolumeDisplayNode()
        scene.AddNode(display)
        map_node.SetAndObserveDisplayNodeID(display.GetID())
    display.SetAndObserveColorNodeID(inferno_color_node(scene).GetID())
    if window_level is None:
        values = vtk_to_numpy(map_node.GetImageData().GetPointData().GetScalars())
        low, high = (float(v) for v in np.percentile(values, [1.0, 99.9]))
        high = max(high, low + 1e-6)
        window_level = (high - low, (high + low) / 2.0)
    display.AutoWindowLevelOff()
    display.SetWindowLevel(*window_level)
    set_threshold(map_node, window_level[1] - window_level[0] / 2.0 if threshold is None else threshold)
    for composite in _composite_nodes(scene):
        composite.SetBackgroundVolumeID(scan_node.GetID())
        composite.SetForegroundVolumeID(map_node.GetID())
    set_opacity(scene, opacity)
    return display


def color_legend(scene, map_node, calibrated: bool):
    """The colour bar of ``map_node`` shown in the slice views: Slicer's colour
    legend, titled with what its values are ("z, healthy-calibrated" or "raw, not
    calibrated"; also the node's `UNIT_ATTRIBUTE`, which `uad gui`'s legend reads).
    Returns the legend display node."""
    import slicer

    unit = CALIBRATED_UNIT if calibrated else RAW_UNIT
    map_node.SetAttribute(UNIT_ATTRIBUTE, unit)
    display = map_node.GetDisplayNode()
    legend = None
    for index in range(map_node.GetNumberOfDisplayNodes()):  # one legend a map, also when it is shown again
        node = map_node.GetNthDisplayNode(index)
        if node is not None and node.IsA("vtkMRMLColorLegendDisplayNode"):
            legend = node
    if legend is None:
        legend = slicer.vtkMRMLColorLegendDisplayNode()
        scene.AddNode(legend)
        map_node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetAndObservePrimaryDisplayNode(display)
    legend.SetTitleText(f"anomaly map ({unit})")
    legend.SetLabelFormat("%.1f")
    legend.SetVisibility(True)
    return legend


def show_outline(scene, scan_node, mask: np.ndarray, name: str):
    """A ground-truth mask (indexed [i, j, k] on the scan node's own grid) drawn as
    an outline in every slice view (the label layer, outlined), so the map's colours
    inside it stay visible. Returns the label map node."""
    import slicer

    node = _on_scan_grid(scene, scan_node, (np.asarray(mask) > 0).astype(np.uint8), slicer.vtkMRMLLabelMapVolumeNode(), name, "mask")
    node.SetAttribute(MAP_ATTRIBUTE, "mask")  # not a scan to score either
    colours = slicer.vtkMRMLColorTableNode()
    colours.SetTypeToUser()
    colours.SetNumberOfColors(2)
    colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    colours.SetColor(1, "lesion", 0.0, 1.0, 1.0, 1.0)  # cyan, as in the reports' pictures
    scene.AddNode(colours)
    display = slicer.vtkMRMLLabelMapVolumeDisplayNode()
    scene.AddNode(display)
    display.SetAndObserveColorNodeID(colours.GetID())
    node.SetAndObserveDisplayNodeID(display.GetID())
    for composite in _composite_nodes(scene):
        composite.SetLabelVolumeID(node.GetID())
        composite.SetLabelOpacity(1.0)
    slices = scene.GetNodesByClass("vtkMRMLSliceNode")
    for index in range(slices.GetNumberOfItems()):
        slices.GetItemAsObject(index).SetUseLabelOutline(True)
    return node


def set_threshold(map_node, threshold: float) -> None:
    """Map values below ``threshold`` are transparent (live: the slider's action)."""
    display = map_node.GetDisplayNode()
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(float("inf"))
    display.ApplyThresholdOn()


def set_opacity(scene, opacity: float) -> None:
    """Foreground opacity in every slice view (live: the slider's action)."""
    for composite in _composite_nodes(scene):
        composite.SetForegroundOpacity(float(opacity))


def map_to_segmentation(scene, map_node, threshold: float, name: str | None = None):
    """A segmentation node with one segment: the map's voxels at or above
    ``threshold``, in the map's geometry. Returns the segmentation node."""
    import slicer

    above = (_voxels(map_node) >= threshold).astype(np.uint8).transpose(2, 1, 0)  # [i, j, k], as _on_scan_grid takes it
    labelmap = _on_scan_grid(scene, map_node, above, slicer.vtkMRMLLabelMapVolumeNode(), f"{map_node.GetName()} >= {threshold:g}",
                             "labels")
    segmentation = slicer.vtkMRMLSegmentationNode()
    segmentation.SetName(name or f"{map_node.GetName()} segmentation")
    scene.AddNode(segmentation)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
        raise RuntimeError(f"{map_node.GetName()}: the thresholded map could not become a segmentation")
    scene.RemoveNode(labelmap)
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    segment.SetName(f"anomaly >= {threshold:g}")
    segment.SetTag(segment.GetTerminologyEntryTagName(), TERMINOLOGY)  # what the segment is, for Slicer and DICOM SEG
    return segmentation


def peak_ras(map_node) -> list[float]:
    """The RAS point (mm) of the highest voxel of ``map_node``."""
    values = _voxels(map_node)
    return _ras_of(map_node, np.unravel_index(int(np.argmax(values)), values.shape))


def hot_spots(map_node, threshold: float, at_most: int = 10) -> list[list[float]]:
    """The RAS points (mm) of the peaks of the map's regions at or above
    ``threshold`` (voxels touching by a face), the highest region first; at most
    ``at_most`` of them."""
    from scipy import ndimage

    values = _voxels(map_node)
    regions, count = ndimage.label(values >= threshold)
    if count == 0:
        return []
    peaks = ndimage.maximum_position(values, regions, range(1, count + 1))
    heights = ndimage.maximum(values, regions, range(1, count + 1))
    ordered = sorted(zip(heights, peaks), key=lambda pair: -pair[0])[:at_most]
    return [_ras_of(map_node, peak) for _, peak in ordered]


def _voxels(volume_node) -> np.ndarray:
    """A volume node's voxels as VTK holds them, indexed [k, j, i] (a view, no copy)."""
    from vtk.util.numpy_support import vtk_to_numpy

    image = volume_node.GetImageData()
    i, j, k = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def _ras_of(volume_node, kji) -> list[float]:
    """The RAS point (mm) of the voxel [k, j, i] of ``volume_node``."""
    import vtk

    kk, jj, ii = kji
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return [float(v) for v in matrix.MultiplyPoint((float(ii), float(jj), float(kk), 1.0))[:3]]


def jump_to(scene, ras) -> None:
    """Centre every slice view on the RAS point ``ras`` (mm): each shows its slice through it."""
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    for index in range(nodes.GetNumberOfItems()):
        nodes.GetItemAsObject(index).JumpSliceByCentering(*(float(v) for v in ras))


def _composite_nodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
