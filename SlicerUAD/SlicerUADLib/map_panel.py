"""The Anomaly map panel: a loaded volume scored by a pretrained model or one's own
run in a background `uad score`, its map overlaid in the volume's geometry with
live opacity and threshold, the views at its peak, a segmentation from the
thresholded map.
"""

from __future__ import annotations

from uadcore import pretrained
from uadcore.score.calibrate import STATISTICS
from uadcore.score.words import score_words

from SlicerUADLib.logic import map_kinds
from SlicerUADLib.overlay import MAP_ATTRIBUTE, hot_spots, jump_to, map_to_segmentation, set_opacity, set_threshold
from SlicerUADLib.qtcompat import qt, read
from SlicerUADLib.widgets import message, path_field, poll_timer, side_by_side


OWN_RUN = "your trained run (folder below)"
FPR_CHOICES = (("none", None), ("1 % of healthy voxels", "0.01"), ("5 % of healthy voxels", "0.05"), ("10 % of healthy voxels", "0.1"))


class MapPanel:
    """Score a loaded volume with a trained run; overlay the map; live opacity and
    threshold; healthy-data thresholds; a segmentation from the thresholded map."""

    def __init__(self, logic, parent=None):
        self.logic = logic
        self.result = None
        self.job = None  # the background map computation (a `MapJob`)
        self.widget = qt.QWidget(parent)
        form = qt.QFormLayout(self.widget)
        self.volume = qt.QComboBox()
        self.refresh = qt.QPushButton("↻")
        self.refresh.setToolTip("list the loaded volumes")
        self.run, run_row = path_field("a trained run folder", True, self.widget)
        # the models shipped with UAD: a map of any T1 scan before training on one's own
        self.pretrained = qt.QComboBox()
        self.pretrained.addItem(OWN_RUN)
        self.pretrained.addItems([pretrained.PREFIX + name for name in pretrained.available()])
        self.pretrained.setToolTip("a model shipped with UAD, trained on healthy IXI T1 scans (see its MODEL_CARD.md), "
                                   "or your own trained run")
        self.mask, mask_row = path_field("optional: its lesion mask, drawn as an outline", False, self.widget)
        self.kind = qt.QComboBox()
        self.kind.addItem("(the model's default)")
        self.kind.addItems(list(map_kinds()))
        self.raw = qt.QCheckBox("raw (not calibrated on healthy scans)")
        self.statistic = qt.QComboBox()
        self.statistic.addItem("(the run's choice)")
        self.statistic.addItems(list(STATISTICS))
        self.compute = qt.QPushButton("Compute anomaly map")
        self.opacity = qt.QSlider(qt.Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.threshold = qt.QSlider(qt.Qt.Horizontal)
        self.threshold.setRange(0, 1000)
        # what each slider is set to, beside it: a slider alone says nothing of its value
        self.opacity_value, self.threshold_value = qt.QLabel("50 %"), qt.QLabel("-")
        for label in (self.opacity_value, self.threshold_value):
            label.setMinimumWidth(64)  # "12.34 z" fits; the row does not jump as the value changes
        self.fpr = qt.QComboBox()
        for label, _ in FPR_CHOICES:
            self.fpr.addItem(label)
        self.fpr.setCurrentIndex(2)
        self.score = qt.QLabel("")
        self.score.setWordWrap(True)
        self.progress = qt.QProgressBar()
        self.progress.setRange(0, 1)
        self.timer = poll_timer(self.poll)
        self.next_spot = qt.QPushButton("Next hot spot")
        self.next_spot.setToolTip("move every view to the next region of the map above the threshold, the highest first")
        # the hot spots of the shown map (at the threshold they were found for) and the one in view
        self.spots, self.spot, self._spots_at = [], -1, None
        self.segment = qt.QPushButton("Create segmentation")
        for label, widget in (("Input volume", side_by_side(self.volume, self.refresh)), ("Model", self.pretrained),
                              ("Trained run", run_row), ("Lesion mask", mask_row), ("Map", self.kind),
                              ("", self.raw), ("Sample score", self.statistic), ("", self.compute), ("Opacity", side_by_side(self.opacity, self.opacity_value)),
                              ("Threshold", side_by_side(self.threshold, self.threshold_value)),
                              ("Threshold at FPR", self.fpr), ("Progress", self.progress), ("Score", self.score), ("", self.next_spot), ("", self.segment)):
            form.addRow(label, widget)
        self.refresh.clicked.connect(self.list_volumes)
        self.pretrained.currentIndexChanged.connect(self._model_chosen)
        self.run.textChanged.connect(self._run_typed)
        recommended = self.pretrained.findText(pretrained.PREFIX + pretrained.RECOMMENDED)
        self.pretrained.setCurrentIndex(max(recommended, 0))  # a new user's first map needs no training
        self.compute.clicked.connect(self.compute_map)
        self.opacity.valueChanged.connect(self._opacity_moved)
        self.threshold.valueChanged.connect(self._threshold_moved)
        self.fpr.currentIndexChanged.connect(self._fpr_chosen)
        self.segment.clicked.connect(self.create_segmentation)
        self.next_spot.clicked.connect(self.go_to_next_spot)
        self.list_volumes()
        self.logic.watch_scene(on_closed=self.scene_closed, on_nodes_changed=self.list_volumes)

    def _model_chosen(self, index: int) -> None:
        """A pretrained model fills the run field with its name; "own run" empties it."""
        if index > 0:
            self.run.setText(read(self.pretrained, "currentText"))
        elif pretrained.is_pretrained(read(self.run, "text")):
            self.run.setText("")

    def _run_typed(self, text: str) -> None:
        """A run folder typed or browsed is one's own run, not a pretrained model."""
        index = self.pretrained.findText(text.strip()) if pretrained.is_pretrained(text.strip()) else 0
        if int(read(self.pretrained, "currentIndex")) != max(index, 0):
            self.pretrained.setCurrentIndex(max(index, 0))

    def scene_closed(self) -> None:
        """The map and its nodes went with the scene: forget them, so the controls
        act on nothing instead of on deleted nodes."""
        self.result = None
        self.score.setText("")
        self.threshold_value.setText("-")
        self.list_volumes()

    def volumes(self) -> list:
        nodes = self.logic.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        return [n for n in found if n.GetAttribute(MAP_ATTRIBUTE) is None and n.GetClassName() == "vtkMRMLScalarVolumeNode"]

    def list_volumes(self) -> None:
        current = read(self.volume, "currentText")
        self.volume.clear()
        self.volume.addItems([node.GetName() for node in self.volumes()])
        if current:
            index = self.volume.findText(current)
            if index >= 0:
                self.volume.setCurrentIndex(index)

    def compute_map(self) -> None:
        """Start the map of the chosen volume as a background job (the button then
        cancels it); `poll` shows it when it is done."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            return
        nodes = {node.GetName(): node for node in self.volumes()}
        node = nodes.get(read(self.volume, "currentText"))
        if node is None:
            message(self.widget, "No volume", "load a scan first, then choose it as the input volume")
            return
        kind = None if int(read(self.kind, "currentIndex")) == 0 else read(self.kind, "currentText")
        statistic = None if int(read(self.statistic, "currentIndex")) == 0 else read(self.statistic, "currentText")
        try:
            self.job = self.logic.start_map(node, read(self.run, "text").strip(), kind, raw=bool(self.raw.isChecked()),
                                            statistic=statistic)
        except Exception as error:
            message(self.widget, "Cannot compute the map", str(error))
            return
        self.compute.setText("Cancel")
        self.progress.setRange(0, 0)  # busy: preparing and scoring report no steps
        self.score.setText(f"computing the map of {node.GetName()} in the background…")
        self.timer.start()

    def wait(self, timeout: float = 600.0) -> None:
        """Block (processing GUI events) until the running map job is done and shown:
        for `uad gui --scan --run` and tests, never for a button."""
        import time

        deadline = time.monotonic() + timeout
        while self.job is not None and self.job.running and time.monotonic() < deadline:
            qt.QApplication.processEvents()
            time.sleep(0.05)
        self.poll()

    def poll(self) -> None:
        if self.job is None or self.job.running:
            return
        self.timer.stop()
        map_job, self.job = self.job, None
        self.compute.setText("Compute anomaly map")
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        if map_job.job.cancelled:
            self.score.setText("cancelled")
            return
        try:
            self.result = self.logic.finish_map(map_job, opacity=int(read(self.opacity, "value")) / 100.0,
                                                fpr=FPR_CHOICES[int(read(self.fpr, "currentIndex"))][1] or "none")
        except Exception as error:
            self.score.setText("failed")
            message(self.widget, "Cannot compute the map", str(error))
            return
        mask = read(self.mask, "text").strip()
        if mask:  # the truth beside the map, when the user has it
            try:
                self.result["outline_node"] = self.logic.show_mask_outline(map_job.volume_node, mask)
            except Exception as error:
                message(self.widget, "Cannot show the lesion mask", str(error))
        result = self.result
        self.score.setText(score_words(result["score"], result["sample_score"], result["kind"], result["calibrated"],
                                       result["percentile"], result["reference_scans"]))
        self._sync_threshold_slider()
        self.next_spot.setText("Next hot spot")

    def _opacity_moved(self, value: int) -> None:
        set_opacity(self.logic.scene, value / 100.0)
        self.opacity_value.setText(f"{value} %")

    def _show_threshold(self) -> None:
        """The threshold's value beside its slider, in the map's units."""
        value = self.result["map_node"].GetDisplayNode().GetLowerThreshold()
        self.threshold_value.setText(f"{value:.2f}{' z' if self.result['calibrated'] else ''}")

    def _value_range(self):
        display = self.result["map_node"].GetDisplayNode()
        low = display.GetWindowLevelMin()
        return low, max(display.GetWindowLevelMax(), low + 1e-9)

    def _sync_threshold_slider(self):
        low, high = self._value_range()
        value = self.result["map_node"].GetDisplayNode().GetLowerThreshold()
        self.threshold.blockSignals(True)
        self.threshold.setValue(int(round(1000 * min(max((value - low) / (high - low), 0.0), 1.0))))
        self.threshold.blockSignals(False)
        self._show_threshold()

    def _threshold_moved(self, position: int) -> None:
        if self.result is None:
            return
        low, high = self._value_range()
        set_threshold(self.result["map_node"], low + (high - low) * position / 1000.0)
        self._show_threshold()

    def _fpr_chosen(self, index: int) -> None:
        if self.result is None:
            return
        key = FPR_CHOICES[index][1]
        value = self.result["thresholds"].get(key) if key else None
        if value is None:
            low, _ = self._value_range()
            value = low
        set_threshold(self.result["map_node"], value)
        self._sync_threshold_slider()

    def go_to_next_spot(self) -> list[float] | None:
        """Every view to the peak of the next region above the map's threshold (the
        highest first, then around again); the regions are found again when the
        threshold moved. Returns the RAS point, or None without a map."""
        if self.result is None:
            return None
        node = self.result["map_node"]
        threshold = node.GetDisplayNode().GetLowerThreshold()
        if self._spots_at != (node.GetID(), threshold):
            self.spots, self.spot, self._spots_at = hot_spots(node, threshold), -1, (node.GetID(), threshold)
        if not self.spots:
            return None
        self.spot = (self.spot + 1) % len(self.spots)
        jump_to(self.logic.scene, self.spots[self.spot])
        self.next_spot.setText(f"Next hot spot ({self.spot + 1} of {len(self.spots)})")
        return self.spots[self.spot]

    def create_segmentation(self):
        if self.result is None:
            return None
        node = self.result["map_node"]
        return map_to_segmentation(self.logic.scene, node, node.GetDisplayNode().GetLowerThreshold())
