"""Anomaly maps in a real MRML scene (slicer-core): the map volume in the scan's
exact geometry, the inferno overlay with threshold and opacity in a rendered slice
view, and a thresholded map turned into a segmentation."""

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is in the gui extra")

import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

from SlicerUADLib.overlay import COLOR_NODE_NAME, add_map_volume, inferno_color_node, map_to_segmentation, set_opacity, set_threshold, show_map  # noqa: E402
from SlicerUADLib.scene import StandaloneScene, ijk_to_ras, volume_array  # noqa: E402
from uadcore.io import Grid, write_nifti  # noqa: E402
from volumes import bright_centroid, marker_volume  # noqa: E402


@pytest.fixture()
def scan_with_map(tmp_path):
    """A scene with an oblique scan, a red slice view through its marker, and a
    Gaussian 'anomaly' map centred on the marker, on the scan's voxel grid."""
    array, grid, marker = marker_volume("oblique")
    write_nifti(array * 0 + (array > 0) * 300.0, grid, str(tmp_path / "scan.nii.gz"))  # a plain brain, no marker
    scene = StandaloneScene()
    scan = scene.load_volume(str(tmp_path / "scan.nii.gz"))
    voxels = volume_array(scan)
    world = Grid(voxels.shape, ijk_to_ras(scan)).index_to_world(np.indices(voxels.shape).reshape(3, -1).T).reshape(*voxels.shape, 3)
    heat = np.exp(-np.sum((world - marker) ** 2, axis=-1) / (2 * 6.0**2)).astype(np.float32)
    view = slicer.vtkMRMLSliceLogic()
    view.SetMRMLApplicationLogic(scene.application_logic)
    view.SetMRMLScene(scene.scene)
    slice_node = view.AddSliceNode("Red")
    slice_node.SetDimensions(200, 200, 1)
    slice_node.SetFieldOfView(200.0, 200.0, 1.0)
    slice_node.JumpSliceByCentering(*marker)
    return scene, scan, heat, marker, view


def rendered_pixel(view, ras):
    """RGB of the rendered slice view at a RAS point."""
    xy_to_ras = vtk.vtkMatrix4x4()
    xy_to_ras.DeepCopy(view.GetSliceNode().GetXYToRAS())
    xy_to_ras.Invert()
    x, y = (int(round(v)) for v in xy_to_ras.MultiplyPoint([*ras, 1.0])[:2])
    producer = view.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return pixels[y, x, :3].astype(int)


def test_the_map_volume_has_the_scans_exact_geometry(scan_with_map):
    scene, scan, heat, marker, _ = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    np.testing.assert_array_equal(ijk_to_ras(node), ijk_to_ras(scan))
    back = volume_array(node)
    np.testing.assert_array_equal(back, heat)
    assert np.linalg.norm(bright_centroid(back, Grid(back.shape, ijk_to_ras(node)), 0.5) - marker) < 0.5
    with pytest.raises(ValueError, match="differs from the scan"):
        add_map_volume(scene.scene, scan, heat[:-1], "wrong")


def test_the_overlay_is_inferno_over_the_scan_with_threshold_and_opacity(scan_with_map, tmp_path):
    scene, scan, heat, marker, view = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    display = show_map(scene.scene, node, scan, opacity=1.0, threshold=0.2, window_level=(1.0, 0.5))
    assert display.GetColorNode().GetName() == COLOR_NODE_NAME and inferno_color_node(scene.scene) is display.GetColorNode()
    composite = view.GetSliceCompositeNode()
    assert composite.GetBackgroundVolumeID() == scan.GetID() and composite.GetForegroundVolumeID() == node.GetID()

    hot = rendered_pixel(view, marker)
    assert hot[0] > 200 and hot[0] > hot[2] + 50  # the top of inferno: bright yellow-white, more red than blue
    away = marker + np.array([0.0, 30.0, 0.0])  # in the brain, where the map is below the threshold
    grey = rendered_pixel(view, away)
    assert grey[0] == grey[1] == grey[2] > 0  # the scan itself shows through

    set_opacity(scene.scene, 0.0)
    assert rendered_pixel(view, marker)[0] == rendered_pixel(view, marker)[1]  # map hidden: grey
    set_opacity(scene.scene, 1.0)
    set_threshold(node, 2.0)  # above every value: nothing drawn
    assert len(set(rendered_pixel(view, marker).tolist())) == 1

    writer = vtk.vtkPNGWriter()  # what a user would see, for the record
    writer.SetFileName(str(tmp_path / "overlay.png"))
    writer.SetInputConnection(view.GetImageDataConnection())
    writer.Write()
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_a_thresholded_map_becomes_a_segmentation(scan_with_map):
    scene, scan, heat, _, _ = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    segmentation = map_to_segmentation(scene.scene, node, 0.5)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    labelmap = segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap")
    assert int((vtk_to_numpy(labelmap.GetPointData().GetScalars()) > 0).sum()) == int((heat >= 0.5).sum()) > 0
    assert scene.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # the helper labelmap is gone
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    entry = vtk.mutable("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), entry)
    entry = str(entry)
    assert "SCT^52988006^Lesion" in entry and "Morphologically Altered Structure" in entry  # a terminology entry
    assert segment.GetName() == "anomaly >= 0.5"


def test_the_review_becomes_a_table_and_the_loss_a_chart():
    from SlicerUADLib.run_nodes import loss_chart, outlier_table
    from uadcore.review import decide

    scene = StandaloneScene().scene
    rows = [{"path": "/data/a.nii.gz", "label": "unhealthy", "rank": 1, "score": 9.5, "scored_by": "audit", "removed": "",
             "decision": "keep", "reason": ""},
            {"path": "/data/b.nii.gz", "label": "", "rank": None, "score": None, "scored_by": "", "removed": "epoch 5",
             "decision": "exclude", "reason": "removed by outlier removal (loss)"}]
    table = outlier_table(scene, rows)
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(1) == "scan"
    assert table.GetCellText(0, 1) == "/data/a.nii.gz" and table.GetCellText(0, 2) == "9.5" and table.GetCellText(1, 0) == ""
    assert table.GetCellText(1, table.GetColumnIndex("decision")) == "exclude"
    decide(rows[0], "exclude", "a mass in the left frontal lobe", reviewer="dr-a")
    assert outlier_table(scene, rows, table=table) is table
    assert [table.GetCellText(0, table.GetColumnIndex(c)) for c in ("decision", "reason", "reviewer")] == \
        ["exclude", "a mass in the left frontal lobe", "dr-a"]

    history = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 6)]
    chart = loss_chart(scene, history, gamma=1.4)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    values = scene.GetFirstNodeByName("UAD training loss values").GetTable()
    assert values.GetNumberOfRows() == 5
    assert values.GetValueByName(4, "threshold").ToDouble() == pytest.approx(1.4 * 0.2)
    history.append({"epoch": 6, "loss": 0.1})
    assert loss_chart(scene, history, gamma=1.4, chart=chart) is chart
    assert scene.GetFirstNodeByName("UAD training loss values").GetTable().GetNumberOfRows() == 6


def test_the_views_go_to_the_maps_peak(scan_with_map):
    from SlicerUADLib.overlay import jump_to, peak_ras

    scene, scan, heat, marker, view = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    peak = peak_ras(node)  # the Gaussian's centre, on an oblique grid: within a voxel of the marker
    assert np.linalg.norm(np.asarray(peak) - marker) < 1.5 * max(np.abs(ijk_to_ras(scan)[:3, :3]).sum(axis=0))
    slice_node = view.GetSliceNode()
    slice_node.JumpSliceByCentering(0.0, 0.0, 0.0)
    jump_to(scene.scene, peak)
    to_ras = slice_node.GetSliceToRAS()
    assert [to_ras.GetElement(row, 3) for row in range(3)] == pytest.approx(peak, abs=1e-3)


def test_the_map_has_a_colour_legend_that_says_what_its_values_are(scan_with_map):
    """Slicer's colour legend for the map's display, titled with its unit; shown
    again, the map keeps one legend, retitled."""
    from SlicerUADLib.overlay import UNIT_ATTRIBUTE, color_legend

    scene, scan, heat, marker, view = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    show_map(scene.scene, node, scan, threshold=0.2)
    legend = color_legend(scene.scene, node, calibrated=True)
    assert legend.IsA("vtkMRMLColorLegendDisplayNode") and legend.GetVisibility()
    assert legend.GetPrimaryDisplayNode() is node.GetDisplayNode()
    assert legend.GetTitleText() == "anomaly map (z, healthy-calibrated)"
    assert node.GetAttribute(UNIT_ATTRIBUTE) == "z, healthy-calibrated"
    again = color_legend(scene.scene, node, calibrated=False)
    legends = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    assert again is legend and sum(d.IsA("vtkMRMLColorLegendDisplayNode") for d in legends) == 1
    assert legend.GetTitleText() == "anomaly map (raw, not calibrated)"


def test_hot_spots_are_the_peaks_of_the_maps_regions_highest_first(scan_with_map):
    from SlicerUADLib.overlay import hot_spots, peak_ras

    scene, scan, heat, marker, view = scan_with_map
    second = np.roll(heat, heat.shape[0] // 3, axis=0) * 0.6  # a lower region, a third of the volume away
    node = add_map_volume(scene.scene, scan, np.maximum(heat, second), "two regions")
    spots = hot_spots(node, 0.3)
    assert len(spots) == 2 and spots[0] == pytest.approx(peak_ras(node))
    assert np.linalg.norm(np.asarray(spots[1]) - np.asarray(spots[0])) > 10.0  # the other region, mm away
    assert hot_spots(node, 2.0) == [] and len(hot_spots(node, 0.3, at_most=1)) == 1


def test_a_ground_truth_mask_is_drawn_as_an_outline_over_the_map(scan_with_map):
    """The mask in the label layer, outlined in every slice view: the rendered
    pixel at the lesion's centre keeps the map's colour, its edge turns cyan."""
    from SlicerUADLib.overlay import show_outline

    scene, scan, heat, marker, view = scan_with_map
    node = add_map_volume(scene.scene, scan, heat, "anomaly")
    show_map(scene.scene, node, scan, opacity=1.0, threshold=0.2, window_level=(1.0, 0.5))
    mask = heat > 0.5
    outline = show_outline(scene.scene, scan, mask, "lesion")
    assert volume_array(outline).astype(bool).tolist() == mask.tolist()
    assert view.GetSliceCompositeNode().GetLabelVolumeID() == outline.GetID()
    assert view.GetSliceNode().GetUseLabelOutline()
    def cyan(rgb):
        return rgb[0] < 60 and rgb[1] > 200 and rgb[2] > 200

    assert not cyan(rendered_pixel(view, marker))  # inside: the map's colour
    edge = np.sqrt(2 * 6.0**2 * np.log(2))  # mm from the centre where the Gaussian of the fixture falls to 0.5
    ring = [rendered_pixel(view, np.asarray(marker) + [r * np.cos(a), r * np.sin(a), 0.0])
            for r in np.linspace(edge - 3, edge + 3, 7) for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    assert any(cyan(rgb) for rgb in ring)  # the outline
    with pytest.raises(ValueError, match="differs from the scan's voxel grid"):
        show_outline(scene.scene, scan, mask[1:], "bad")
