"""The panels in the `uad gui` window, driven with pytest-qt against a real MRML
scene and real background training processes on a tiny synthetic cohort."""

import csv
import json
import os

import pytest

pytest.importorskip("slicer", reason="slicer-core is in the gui extra")
pytest.importorskip("PyQt5", reason="PyQt5 is in the gui extra")

from SlicerUADLib.gui import MainWindow  # noqa: E402
from SlicerUADLib.overlay import MAP_ATTRIBUTE  # noqa: E402

TIMEOUT_MS = 240_000


@pytest.fixture()
def window(qtbot):
    main = MainWindow()
    qtbot.addWidget(main.window)
    main.window.show()
    yield main
    for panel in (main.train, main.evaluate):
        if panel.job is not None and panel.job.running:
            panel.job.cancel(grace_seconds=1.0)
            panel.job.wait(30)
    main.close()


def tiny_settings(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"model_params": {"channels": [4, 8, 16, 32], "latent": 16}, "batch_size": 4,
                                "val_fraction": 0.2, "workers": 1, "checkpoint_every": 1}))
    return str(path)


def _validation_paths(run):
    from uadcore.io.checkpoint import load_checkpoint

    return [e["path"] for e in load_checkpoint(str(run / "checkpoint.pt"))["validation"]["entries"]]


def map_nodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()) if nodes.GetItemAsObject(i).GetAttribute(MAP_ATTRIBUTE)]


def test_train_cancel_train_review_export_and_map(window, qtbot, tmp_path, cohort):
    train = window.train
    train.data.setText(cohort)
    train.config.setText(tiny_settings(tmp_path))
    train.reinit_at.setText("none")
    train.device.setCurrentText("cpu")

    # start a long run, see its progress events arrive, cancel it
    train.out.setText(str(tmp_path / "long"))
    train.epochs.setValue(500)
    qtbot.mouseClick(train.start, 1)
    assert not train.start.isEnabled() and train.cancel.isEnabled()
    qtbot.waitUntil(lambda: len(train.history) >= 1, timeout=TIMEOUT_MS)
    assert train.progress.maximum() == 500 and train.progress.value() >= 1
    qtbot.mouseClick(train.cancel, 1)
    qtbot.waitUntil(lambda: train.job.finished and train.start.isEnabled(), timeout=TIMEOUT_MS)
    assert "stopped" in train.status.text() and train.job.error_message() is None
    assert os.path.exists(tmp_path / "long" / "checkpoint.pt")  # resumable

    # run again, to completion, with gamma 1.0 so that scans are removed
    train.out.setText(str(tmp_path / "run"))
    train.epochs.setValue(3)
    train.gamma.setValue(1.0)
    train.outlier_every.setValue(1)
    qtbot.mouseClick(train.start, 1)
    qtbot.waitUntil(lambda: train.job.finished and train.status.text().startswith("done"), timeout=TIMEOUT_MS)
    assert [e["epoch"] for e in train.history] == [1, 2, 3]
    assert train.chart_node is not None and train.chart_node.GetNumberOfPlotSeriesNodes() == 2

    # the outlier review panel was filled when the run finished
    review = window.outliers
    assert review.run.text() == str(tmp_path / "run")
    removed = review.rows
    assert review.table.rowCount() == len(removed) > 0
    assert review.table_node.GetNumberOfRows() == len(removed)
    review.table.selectRow(0)  # loads that scan with its map overlaid
    qtbot.waitUntil(lambda: review.last_shown is not None, timeout=TIMEOUT_MS)
    shown = review.last_shown
    assert shown["map_node"].GetAttribute(MAP_ATTRIBUTE) == "1" and shown["score"] > 0
    first = review.selected_row()
    qtbot.mouseClick(review.keep, 1)
    assert first["decision"] == "keep"
    review.manifest.setText(str(tmp_path / "curated.csv"))
    qtbot.mouseClick(review.export, 1)
    with open(tmp_path / "curated.csv", newline="") as handle:
        curated = [row["path"] for row in csv.DictReader(handle)]
    kept = [row["path"] for row in csv.DictReader(open(tmp_path / "run" / "kept.csv", newline=""))]
    validation = _validation_paths(tmp_path / "run")
    assert len(curated) == len(kept) + 1 + len(validation) and set(validation) <= set(curated)
    assert os.path.basename(first["path"]) in {os.path.basename(p) for p in curated}

    # an anomaly map of a loaded volume, with live opacity and thresholds
    maps = window.maps
    node = window.load_volume(first["path"])
    maps.volume.setCurrentIndex(maps.volume.findText(node.GetName()))
    maps.run.setText(str(tmp_path / "run"))
    before = len(map_nodes(window.standalone.scene))
    qtbot.mouseClick(maps.compute, 1)  # a background job: the GUI goes on
    assert maps.job is not None and maps.compute.text() == "Cancel" and maps.result is None
    qtbot.waitUntil(lambda: maps.result is not None, timeout=TIMEOUT_MS)
    assert maps.job is None and len(map_nodes(window.standalone.scene)) == before + 1
    # the views moved to where the map is highest
    from SlicerUADLib.overlay import peak_ras

    axial = window.views[0].logic.GetSliceNode().GetSliceToRAS()
    assert axial.GetElement(2, 3) == pytest.approx(peak_ras(maps.result["map_node"])[2], abs=2.0)
    assert "score" in maps.score.text() and f"{maps.result['sample_score']} of the" in maps.score.text()
    # the raw map and another sample score, as chosen in the panel
    maps.raw.setChecked(True)
    maps.statistic.setCurrentIndex(maps.statistic.findText("top1"))
    maps.result = None
    qtbot.mouseClick(maps.compute, 1)
    qtbot.waitUntil(lambda: maps.result is not None, timeout=TIMEOUT_MS)
    assert maps.result["calibrated"] is False and maps.result["sample_score"] == "top1"
    assert f"top1 of the raw {maps.result['kind']} map (not calibrated)" in maps.score.text()
    # the button cancels a running map job
    shown = maps.result
    qtbot.mouseClick(maps.compute, 1)
    qtbot.mouseClick(maps.compute, 1)
    qtbot.waitUntil(lambda: maps.job is None, timeout=TIMEOUT_MS)
    assert maps.score.text() == "cancelled" and maps.compute.text() == "Compute anomaly map" and maps.result is shown
    maps.opacity.setValue(80)
    composite = window.views[0].logic.GetSliceCompositeNode()
    assert composite.GetForegroundOpacity() == pytest.approx(0.8)
    assert composite.GetForegroundVolumeID() == maps.result["map_node"].GetID()
    maps.fpr.setCurrentIndex(1)  # 1 % of healthy voxels
    display = maps.result["map_node"].GetDisplayNode()
    assert display.GetLowerThreshold() == pytest.approx(maps.result["thresholds"]["0.01"])
    # each slider shows its value beside it
    assert maps.opacity_value.text() == "80 %"
    assert maps.threshold_value.text() == f"{maps.result['thresholds']['0.01']:.2f}" + (" z" if maps.result["calibrated"] else "")
    maps.threshold.setValue(0)
    assert display.GetLowerThreshold() == pytest.approx(display.GetWindowLevelMin())
    segmentation = maps.create_segmentation()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1

    # a pretrained model shipped with UAD: chosen in the panel, it fills the run field
    # and maps the volume without any training (a scan with a lesion, its mask drawn
    # as an outline over the map); a run folder typed in is one's own again
    from uadcore.io import read_manifest

    lesioned = next(e for e in read_manifest(cohort) if e.mask)
    node = window.load_volume(lesioned.path)
    maps.volume.setCurrentIndex(maps.volume.findText(node.GetName()))
    maps.mask.setText(lesioned.mask)
    maps.pretrained.setCurrentIndex(maps.pretrained.findText("pretrained:normative"))
    assert maps.run.text() == "pretrained:normative"
    maps.raw.setChecked(False)
    maps.statistic.setCurrentIndex(0)
    maps.result = None
    qtbot.mouseClick(maps.compute, 1)
    qtbot.waitUntil(lambda: maps.result is not None, timeout=TIMEOUT_MS)
    assert maps.result["calibrated"] is True and maps.result["reference_scans"] >= 10
    composite = window.views[0].logic.GetSliceCompositeNode()
    assert composite.GetLabelVolumeID() == maps.result["outline_node"].GetID()
    assert window.views[0].logic.GetSliceNode().GetUseLabelOutline()
    maps.mask.setText("")
    assert "rough" not in maps.score.text() and "of the calibrated abs-z map" in maps.score.text()
    # the legend beside the views: title with the unit, the window's top ("≥" where the map goes higher), the threshold
    window._tick(force=True)
    display = maps.result["map_node"].GetDisplayNode()
    assert "z, healthy-calibrated" in window.legend.title.text()
    assert window.legend.high.text().lstrip("≥ ") == f"{display.GetWindowLevelMax():.3g}"
    assert window.legend.high.text().startswith("≥") == (maps.result["map_node"].GetImageData().GetScalarRange()[1] > display.GetWindowLevelMax())
    assert window.legend.threshold.text() == f"— shown from {display.GetLowerThreshold():.3g}"
    # "Next hot spot" walks the map's regions above the threshold, the highest first
    qtbot.mouseClick(maps.next_spot, 1)
    first_spot = maps.spots[0]
    assert maps.next_spot.text() == f"Next hot spot (1 of {len(maps.spots)})"
    assert window.views[0].logic.GetSliceNode().GetSliceToRAS().GetElement(2, 3) == pytest.approx(first_spot[2], abs=1e-3)
    if len(maps.spots) > 1:
        qtbot.mouseClick(maps.next_spot, 1)
        assert window.views[0].logic.GetSliceNode().GetSliceToRAS().GetElement(2, 3) == pytest.approx(maps.spots[1][2], abs=1e-3)
    maps.run.setText(str(tmp_path / "run"))
    assert maps.pretrained.currentIndex() == 0

    # File > Close Scene: the panels forget the nodes that went with it, and their
    # controls then act on nothing instead of raising; the volume list follows the scene
    window.standalone.scene.Clear(0)
    assert maps.result is None and maps.volume.count() == 0 and maps.score.text() == ""
    assert train.chart_node is None and review.table_node is None
    maps.threshold.setValue(500)
    maps.fpr.setCurrentIndex(2)
    maps.opacity.setValue(30)
    assert maps.create_segmentation() is None
    node = window.load_volume(first["path"])
    assert maps.volume.findText(node.GetName()) >= 0  # listed without pressing refresh

    shots = window.screenshots(str(tmp_path / "shots"))
    assert len(shots) == 4 and all(os.path.getsize(p) > 10_000 for p in shots)

    # a new training run from the curated manifest
    qtbot.mouseClick(review.retrain, 1)
    assert train.job.running and str(tmp_path / "curated.csv") in train.job.command
    assert train.out.text() == str(tmp_path / "run") + "-curated"
    qtbot.mouseClick(train.cancel, 1)
    qtbot.waitUntil(lambda: train.job.finished and train.start.isEnabled(), timeout=TIMEOUT_MS)


def test_evaluate_panel_runs_in_the_background(window, qtbot, tmp_path, cohort):
    from uadcore.io import read_manifest, write_manifest
    from uadcore.synth import synthesize_cohort
    from uadcore.train import TrainConfig, train

    config = TrainConfig.from_dict({"data": cohort, "model": "ae3d", "model_params": {"channels": [4, 8, 16, 32], "latent": 16},
                                    "epochs": 1, "batch_size": 4, "val_fraction": 0.2, "workers": 1, "reinit_at": []})
    train(config, str(tmp_path / "run"))
    unseen = read_manifest(synthesize_cohort(str(tmp_path / "unseen"), healthy=1, unhealthy=1, seed=11, workers=1, progress=False))
    manifest = write_manifest(unseen, str(tmp_path / "test.csv"))
    panel = window.evaluate
    panel.run.setText(str(tmp_path / "run"))
    panel.manifest.setText(manifest)
    qtbot.mouseClick(panel.start, 1)
    assert not panel.start.isEnabled()  # the window goes on while it runs
    qtbot.waitUntil(lambda: panel.start.isEnabled(), timeout=TIMEOUT_MS)
    assert panel.report is not None and panel.table.rowCount() == 1
    assert panel.table.item(0, 0).text() == "rec" and "2 scans" in panel.status.text()
    alone = panel.report["maps"]["rec"]["lesion_scans_only"]  # the lesion scan alone, in the last two columns
    assert [panel.table.item(0, c).text() for c in (7, 8)] == [f"{alone['voxel_ap']:.3f}", f"{alone['best_dice']:.3f}"]
    assert panel.table.horizontalHeaderItem(7).text() == "voxel_ap (lesion scans)"
    assert panel.roc.pixmap() is not None and not panel.roc.pixmap().isNull()


def test_a_failing_job_says_why(window, qtbot, tmp_path):
    train = window.train
    train.data.setText(str(tmp_path / "missing"))
    train.out.setText(str(tmp_path / "run"))
    qtbot.mouseClick(train.start, 1)
    qtbot.waitUntil(lambda: train.job.finished and train.start.isEnabled(), timeout=TIMEOUT_MS)
    assert train.job.returncode == 2
    assert "missing" in train.job.error_message() and train.status.text().startswith("failed")


def test_slice_views_scroll_and_show_the_scan(window, qtbot, cohort):
    from uadcore.io import read_manifest

    node = window.load_volume(read_manifest(cohort)[0].path)
    assert window.maps.volume.currentText() == node.GetName()
    axial = window.views[0]
    assert axial.slider.maximum() > 20  # one step per slice of the scan
    middle = axial.rgb()
    assert middle.shape == (280, 280, 3) and middle.max() > 50  # the brain, in grey
    offset = axial.logic.GetSliceOffset()
    axial.slider.setValue(axial.slider.maximum() - 2)
    assert axial.logic.GetSliceOffset() > offset + 20  # mm towards the top of the head
    assert not (axial.rgb() == middle).all()
    assert window.legend.high.text() == ""  # no overlay yet, no legend values


def test_uad_gui_screenshots_exits_cleanly_as_a_process(tmp_path, cohort):
    import subprocess
    import sys

    from uadcore.io import read_manifest

    scan = read_manifest(cohort)[0].path
    done = subprocess.run([sys.executable, "-m", "uadcore", "gui", "--scan", scan, "--screenshots", str(tmp_path / "shots")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]  # no crash while the interpreter frees the scene at exit
    assert sorted(os.listdir(tmp_path / "shots")) == [f"uad-gui-{name}.png" for name in ("anomaly-map", "evaluate", "outlier-review", "train")]


def test_review_panel_audits_a_folder_and_exports_decisions(window, qtbot, tmp_path, small_cohort):
    """The Outlier review panel: audit a set of scans in the background, every scan
    ranked; the selected one shown with its out-of-fold map, the views at its peak;
    exclude with a reason; the curated manifest and the decisions beside it."""
    from uadcore.io import read_manifest, write_manifest

    data = write_manifest(small_cohort, str(tmp_path / "training.csv"))
    review = window.outliers
    review.run.setText(str(tmp_path / "audit"))
    review.data.setText(data)
    qtbot.mouseClick(review.audit, 1)
    assert not review.audit.isEnabled() and "auditing" in review.status.text()  # the window goes on
    qtbot.waitUntil(lambda: review.audit.isEnabled(), timeout=TIMEOUT_MS)
    assert review.table.rowCount() == len(small_cohort) == len(review.rows), review.status.text()
    assert [r["rank"] for r in review.rows] == list(range(1, len(small_cohort) + 1))
    assert review.table.item(0, 0).data(0) == 1 and review.table.item(0, 1).text() == os.path.basename(review.rows[0]["path"])
    review.table.selectRow(0)
    assert review.last_shown is not None  # the audit's own map: no job to wait for
    map_node = review.last_shown["map_node"]
    assert map_node.GetAttribute(MAP_ATTRIBUTE) == "1" and "rank 1" in review.status.text()
    # shown above the audit's voxel threshold for a scan's top region (audit.json), not from 0 up
    assert review.rows[0]["threshold"] > 0
    assert map_node.GetDisplayNode().GetLowerThreshold() == pytest.approx(review.rows[0]["threshold"])
    composite = window.views[0].logic.GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == map_node.GetID()
    # every view is centred on the map's peak: the axial view's slice passes through it (the shown map's highest
    # voxel; the row's peak is the model grid's highest voxel carried to the scan: within a model voxel's diagonal)
    axial = window.views[0].logic.GetSliceNode().GetSliceToRAS()
    assert axial.GetElement(2, 3) == pytest.approx(review.rows[0]["peak_ras_mm"][2], abs=2.5 * 3**0.5)
    review.reason.setText("a mass in the left hemisphere")
    qtbot.mouseClick(review.exclude, 1)
    first = review.rows[0]
    assert first["decision"] == "exclude" and first["reason"] == "a mass in the left hemisphere" and first["reviewer"]
    assert review.table.item(0, review.COLUMNS.index("reason")).text() == "a mass in the left hemisphere"
    assert review.reason.text() == ""
    review.manifest.setText(str(tmp_path / "curated.csv"))
    qtbot.mouseClick(review.export, 1)
    kept = [e.path for e in read_manifest(str(tmp_path / "curated.csv"))]
    assert kept == [e.path for e in small_cohort if e.path != first["path"]]
    with open(tmp_path / "curated-decisions.csv", newline="") as handle:
        decisions = {row["path"]: row for row in csv.DictReader(handle)}
    assert decisions[first["path"]]["decision"] == "exclude" and decisions[first["path"]]["reason"] == first["reason"]
    assert "curated-decisions.csv" in review.status.text()


def test_the_review_tells_apart_scans_of_the_same_file_name():
    from SlicerUADLib.widgets import short_names

    assert short_names(["/d/brats-a/t1.nii.gz", "/d/brats-b/t1.nii.gz", "/d/ixi/IXI002.nii.gz"]) == \
        ["brats-a/t1.nii.gz", "brats-b/t1.nii.gz", "IXI002.nii.gz"]


def _clipped(widget) -> str | None:
    """The text of a label, check box, button or table header that does not fit in
    the width the layout gave it, or None."""
    from PyQt5 import QtWidgets

    if not widget.isVisible():
        return None
    metrics = widget.fontMetrics()
    if isinstance(widget, QtWidgets.QLabel) and widget.text() and not widget.wordWrap() and widget.pixmap() is None:
        if metrics.horizontalAdvance(widget.text()) > widget.contentsRect().width():
            return widget.text()
    if isinstance(widget, (QtWidgets.QCheckBox, QtWidgets.QPushButton, QtWidgets.QRadioButton)) and widget.text():
        if widget.sizeHint().width() > widget.width() + 1:
            return widget.text()
    if isinstance(widget, QtWidgets.QTableWidget):
        header = widget.horizontalHeader()
        for column in range(widget.columnCount()):
            item = widget.horizontalHeaderItem(column)
            if item is not None and metrics.horizontalAdvance(item.text()) + 8 > header.sectionSize(column):
                return item.text()
    return None


def test_no_text_in_any_panel_is_clipped_at_the_window_size_uad_gui_opens_at(window, qtbot):
    from PyQt5 import QtWidgets

    from SlicerUADLib.gui import WINDOW_SIZE

    window.window.resize(*WINDOW_SIZE)
    clipped = {}
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        qtbot.wait(100)  # the layout settles
        found = [_clipped(w) for w in window.tabs.currentWidget().findChildren(QtWidgets.QWidget)]
        clipped[window.tabs.tabText(index)] = [text for text in found if text]
    assert clipped == {name: [] for name in clipped}
