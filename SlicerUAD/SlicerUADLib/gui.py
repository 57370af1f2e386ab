"""`uad gui`: the Slicer panels in a PyQt5 window, for people without 3D Slicer.

Three slice views (axial, sagittal, coronal) are rendered from a real MRML scene
(`StandaloneScene`, from the slicer-core wheel) by `vtkMRMLSliceLogic`, without
OpenGL, into labels; a slider under each scrolls through its slices. The overlay's
colour legend sits beside them. The panels are the same objects Slicer shows.
"""

from __future__ import annotations

import os

import numpy as np

from SlicerUADLib.logic import UADLogic
from SlicerUADLib.overlay import INFERNO, UNIT_ATTRIBUTE
from SlicerUADLib.panels import EvaluatePanel, MapPanel, OutlierPanel, TrainPanel
from SlicerUADLib.qtcompat import qt
from SlicerUADLib.scene import StandaloneScene

VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))
VIEW_PIXELS = 280
REFRESH_MS = 250


class SliceView:
    """One slice view: a `vtkMRMLSliceLogic` rendered into a label, and a slider."""

    def __init__(self, standalone: StandaloneScene, layout_name: str, orientation: str):
        import slicer

        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(standalone.application_logic)
        self.logic.SetMRMLScene(standalone.scene)
        self.node = self.logic.AddSliceNode(layout_name)
        self.node.SetOrientation(orientation)
        self.node.SetDimensions(VIEW_PIXELS, VIEW_PIXELS, 1)
        self.widget = qt.QWidget()
        layout = qt.QVBoxLayout(self.widget)
        layout.setContentsMargins(2, 2, 2, 2)
        self.title = qt.QLabel(orientation)
        self.image = qt.QLabel()
        self.image.setFixedSize(VIEW_PIXELS, VIEW_PIXELS)
        self.image.setStyleSheet("background: black")
        self.slider = qt.QSlider(qt.Qt.Horizontal)
        self.slider.setRange(0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.image)
        layout.addWidget(self.slider)
        self.slider.valueChanged.connect(self._scroll)
        self._offsets = np.zeros(1)
        self._shown_time = -1

    def fit(self) -> None:
        """Fit the view to the background volume and range the slider over its slices."""
        self.logic.FitSliceToAll()
        bounds = [0.0] * 6
        self.logic.GetLowestVolumeSliceBounds(bounds)
        spacing = self.logic.GetLowestVolumeSliceSpacing()[2] or 1.0
        self._offsets = np.arange(bounds[4], bounds[5] + spacing / 2, spacing) + spacing / 2
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(len(self._offsets) - 1, 0))
        self.slider.setValue(len(self._offsets) // 2)
        self.slider.blockSignals(False)
        self._scroll(len(self._offsets) // 2)

    def _scroll(self, index: int) -> None:
        if len(self._offsets):
            self.logic.SetSliceOffset(float(self._offsets[min(index, len(self._offsets) - 1)]))
        self.refresh()

    def rgb(self) -> np.ndarray:
        """The rendered view as (height, width, 3) uint8, top row first."""
        from vtk.util.numpy_support import vtk_to_numpy

        producer = self.logic.GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
        return np.ascontiguousarray(pixels)

    def refresh(self, force: bool = True) -> None:
        connection = self.logic.GetImageDataConnection()
        if connection is None:  # nothing loaded yet
            return
        producer = connection.GetProducer()
        producer.Update()
        stamp = producer.GetOutput().GetMTime()
        if not force and stamp == self._shown_time:
            return
        self._shown_time = stamp
        pixels = self.rgb()
        height, width, _ = pixels.shape
        image = qt.QImage(pixels.data, width, height, 3 * width, qt.QImage.Format_RGB888).copy()
        self.image.setPixmap(qt.QPixmap.fromImage(image))


class ColourLegend:
    """The overlay's colour bar, drawn as Slicer's colour legend reads: a title with
    the unit of the map's values, the window's top (with "≥" where the map goes
    higher: its brightest colour then stands for everything above), its bottom,
    and the threshold below which the map is transparent, marked on the bar."""

    HEIGHT, WIDTH = 200, 18

    def __init__(self):
        self.widget = qt.QWidget()
        layout = qt.QVBoxLayout(self.widget)
        self.title = qt.QLabel("")
        self.title.setWordWrap(True)
        self.high = qt.QLabel("")
        self.bar = qt.QLabel()
        self.low = qt.QLabel("")
        self.threshold = qt.QLabel("")
        self.threshold.setWordWrap(True)
        for widget in (self.title, self.high, self.bar, self.low, self.threshold):
            layout.addWidget(widget)
        anchors = np.asarray(INFERNO)
        rows = np.stack([np.interp(np.linspace(1, 0, self.HEIGHT), np.linspace(0, 1, len(anchors)), anchors[:, c])
                         for c in range(3)], 1)
        self._colours = np.repeat((rows * 255).astype(np.uint8)[:, None, :], self.WIDTH, axis=1)
        self._draw(None)

    def _draw(self, marked_row: int | None) -> None:
        pixels = self._colours.copy()
        if marked_row is not None:  # the threshold: a white line across the bar
            pixels[max(marked_row - 1, 0):marked_row + 1] = 255
        self._pixels = np.ascontiguousarray(pixels)  # QImage borrows the buffer
        image = qt.QImage(self._pixels.data, self.WIDTH, self.HEIGHT, self.WIDTH * 3, qt.QImage.Format_RGB888)
        self.bar.setPixmap(qt.QPixmap.fromImage(image.copy()))

    def show_range(self, low: float | None, high: float | None, unit: str = "", highest: float | None = None,
                   threshold: float | None = None) -> None:
        """The bar for a map shown from ``low`` to ``high`` (its window), whose values
        are ``unit`` and reach ``highest``, transparent below ``threshold``; None: no map."""
        if low is None or high is None:
            for label in (self.title, self.high, self.low, self.threshold):
                label.setText("")
            self._draw(None)
            return
        self.title.setText(f"anomaly map\n({unit})" if unit else "anomaly map")
        above = highest is not None and highest > high
        self.high.setText(f"{'≥ ' if above else ''}{high:.3g}")
        self.low.setText(f"{low:.3g}")
        marked = None
        if threshold is not None and high > low:
            share = min(max((threshold - low) / (high - low), 0.0), 1.0)
            marked = int(round((1.0 - share) * (self.HEIGHT - 1)))
            self.threshold.setText(f"— shown from {threshold:.3g}")
        else:
            self.threshold.setText("")
        self._draw(marked)


WINDOW_SIZE = (1100, 760)  # what `uad gui` opens at: every label must fit at this size (Testing/test_gui.py)


class MainWindow:
    """The `uad gui` window: panels on the left, slice views and legend on the right."""

    def __init__(self):
        self.standalone = StandaloneScene()
        self.logic = UADLogic(self.standalone.scene, self.load_volume)
        self.window = qt.QMainWindow()
        self.window.setWindowTitle("UAD — unsupervised anomaly detection")
        central = qt.QWidget()
        layout = qt.QHBoxLayout(central)
        self.tabs = qt.QTabWidget()
        self.train = TrainPanel(self.logic)
        self.outliers = OutlierPanel(self.logic, self.train)
        self.maps = MapPanel(self.logic)
        self.evaluate = EvaluatePanel(self.logic)
        self.train.on_finished = self.outliers.load_run
        for title, panel in (("Train", self.train), ("Outlier review", self.outliers), ("Anomaly map", self.maps), ("Evaluate", self.evaluate)):
            self.tabs.addTab(panel.widget, title)
        # as wide as the widest panel asks: narrower, its labels are cut ("remove outliers during trair")
        self.tabs.setMinimumWidth(max(panel.widget.sizeHint().width() for panel in (self.train, self.outliers, self.maps, self.evaluate)) + 24)
        layout.addWidget(self.tabs)
        right = qt.QWidget()
        grid = qt.QGridLayout(right)
        self.open_scan = qt.QPushButton("Load scan…")
        self.open_scan.clicked.connect(self._choose_scan)
        grid.addWidget(self.open_scan, 0, 0)
        self.views = [SliceView(self.standalone, name, orientation) for name, orientation in VIEWS]
        positions = ((1, 0), (1, 1), (2, 0))
        for view, (row, column) in zip(self.views, positions):
            grid.addWidget(view.widget, row, column)
        self.legend = ColourLegend()
        grid.addWidget(self.legend.widget, 2, 1)
        layout.addWidget(right)
        self.window.setCentralWidget(central)
        self.maps.compute.clicked.connect(self._after_map)
        self.timer = qt.QTimer()
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def load_volume(self, path: str):
        """Load a scan with Slicer's reader and show it in every view."""
        node = self.standalone.load_volume(path)
        composites = self.standalone.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for index in range(composites.GetNumberOfItems()):
            composite = composites.GetItemAsObject(index)
            composite.SetBackgroundVolumeID(node.GetID())
            composite.SetForegroundVolumeID(None)
        for view in self.views:
            view.fit()
        self.maps.list_volumes()
        self.maps.volume.setCurrentIndex(self.maps.volume.findText(node.GetName()))
        self.legend.show_range(None, None)
        return node

    def _choose_scan(self):
        chosen = qt.QFileDialog.getOpenFileName(self.window, "Load a scan")
        chosen = chosen[0] if isinstance(chosen, tuple) else chosen
        if chosen:
            self.load_volume(chosen)

    def _after_map(self):
        self._tick(force=True)

    def _tick(self, force: bool = False):
        """Re-render views whose image changed; keep the legend on the shown map."""
        for view in self.views:
            view.refresh(force=force)
        if not self.views:
            return
        shown = self.standalone.scene.GetNodeByID(self.views[0].logic.GetSliceCompositeNode().GetForegroundVolumeID() or "")
        display = shown.GetDisplayNode() if shown is not None else None
        if display is None:
            self.legend.show_range(None, None)
        else:
            threshold = display.GetLowerThreshold() if display.GetApplyThreshold() else None
            self.legend.show_range(display.GetWindowLevelMin(), display.GetWindowLevelMax(), shown.GetAttribute(UNIT_ATTRIBUTE) or "",
                                   shown.GetImageData().GetScalarRange()[1], threshold)

    def close(self) -> None:
        """Stop the timers and detach every logic from the scene before anything is
        freed (VTK logics outliving their scene crash the garbage collector)."""
        for timer in (self.timer, self.train.timer, self.evaluate.timer, self.maps.timer, self.outliers.timer):
            timer.stop()
        for panel in (self.maps, self.outliers):
            if panel.job is not None and panel.job.running:
                panel.job.stop(grace_seconds=2.0)
        self.logic.stop_watching()
        for view in self.views:
            view.logic.SetMRMLScene(None)
        self.views = []
        self.standalone.close()
        self.window.close()

    def screenshots(self, folder: str) -> list[str]:
        """PNGs of the window with each panel in front (for docs and tests)."""
        os.makedirs(folder, exist_ok=True)
        written = []
        for index, name in enumerate(("train", "outlier-review", "anomaly-map", "evaluate")):
            self.tabs.setCurrentIndex(index)
            for view in self.views:
                view.refresh()
            path = os.path.join(folder, f"uad-gui-{name}.png")
            self.window.grab().save(path)
            written.append(path)
        return written


def run_gui(scan: str | None = None, run: str | None = None, screenshots: str | None = None, mask: str | None = None) -> int:
    """Open the window (``screenshots``: write them and close). Returns an exit code."""
    import sys

    import vtk

    from uadcore.libraries import DEBUG_ENV
    from uadcore.pretrained import is_pretrained

    # VTK's warnings and errors (a reader's, a renderer's) print blocks on stderr that say
    # nothing a user can act on: shown only with `uad --debug gui`, as the libraries' are
    vtk.vtkObject.SetGlobalWarningDisplay(os.environ.get(DEBUG_ENV) == "1")
    app = qt.QApplication.instance() or qt.QApplication(sys.argv[:1])
    window = MainWindow()
    window.window.resize(*WINDOW_SIZE)
    if scan:
        window.load_volume(os.path.abspath(scan))
    if run and is_pretrained(run):  # a model shipped with UAD: it maps and evaluates, it has no training to review
        for edit in (window.maps.run, window.evaluate.run):
            edit.setText(run)
    elif run:
        for edit in (window.maps.run, window.outliers.run, window.evaluate.run):
            edit.setText(os.path.abspath(run))
        window.outliers.load_run()
    if scan and run:
        window.maps.mask.setText(os.path.abspath(mask) if mask else "")
        window.maps.compute_map()
        window.maps.wait()
        window._after_map()
    window.window.show()
    try:
        if screenshots:
            app.processEvents()
            for path in window.screenshots(screenshots):
                print(path)
            return 0
        return app.exec_()
    finally:
        window.close()  # detach the VTK logics before the interpreter frees them (else a crash at exit)
