"""The four panels: Train, Outlier review, Anomaly map, Evaluate.

Each is a plain class holding its ``widget`` (no Qt subclassing, so PythonQt and
PyQt5 behave alike), built on a `UADLogic` it receives, written against
`qtcompat`. Long work runs in background jobs followed by a timer; the GUI never
waits on them.
"""

from __future__ import annotations

import os

from uadcore.device import DEVICES
from uadcore.evaluate import EvaluationReport
from uadcore.review import decide
from uadcore.score.calibrate import STATISTICS
from uadcore.score.words import score_words
from uadcore.train.config import REMOVAL_SCORES
from uadcore.train.events import Done, Epoch, Error, Estimate, RemovalHeld, Removed, Start, Stopped, parse_event

from SlicerUADLib.logic import TrainSettings, map_kinds, models
from SlicerUADLib.overlay import MAP_ATTRIBUTE, map_to_segmentation, set_opacity, set_threshold
from SlicerUADLib.qtcompat import qt, read
from SlicerUADLib.run_nodes import loss_chart, outlier_table

POLL_MS = 200
FPR_CHOICES = (("none", None), ("1 % of healthy voxels", "0.01"), ("5 % of healthy voxels", "0.05"), ("10 % of healthy voxels", "0.1"))


def _row(*widgets):
    box = qt.QWidget()
    layout = qt.QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def _path_field(placeholder: str, folder: bool, parent_widget):
    """A line edit with a browse button; returns (edit, row widget)."""
    edit = qt.QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = qt.QPushButton("…")
    browse.setToolTip("browse")

    def choose():
        if folder:
            chosen = qt.QFileDialog.getExistingDirectory(parent_widget, placeholder)
        else:
            chosen = qt.QFileDialog.getOpenFileName(parent_widget, placeholder)
            chosen = chosen[0] if isinstance(chosen, tuple) else chosen
        if chosen:
            edit.setText(chosen)

    browse.clicked.connect(choose)
    return edit, _row(edit, browse)


def short_names(paths: list[str]) -> list[str]:
    """File names to show for ``paths``: the base name, with its folder where two
    share one (``brats18-a/t1.nii.gz``, ``brats18-b/t1.nii.gz``)."""
    from collections import Counter

    counts = Counter(os.path.basename(p) for p in paths)
    return [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) if counts[os.path.basename(p)] > 1
            else os.path.basename(p) for p in paths]


def _poll_timer(poll) -> "qt.QTimer":
    """A timer (not started) calling ``poll`` every `POLL_MS` while a panel's job runs."""
    timer = qt.QTimer()
    timer.setInterval(POLL_MS)
    timer.timeout.connect(poll)
    return timer


def _message(parent, title: str, text: str) -> None:
    box = qt.QMessageBox(parent)
    box.setIcon(qt.QMessageBox.Warning)
    box.setWindowTitle(title)
    box.setText(text.splitlines()[0] if text else title)
    box.setDetailedText(text)
    box.show()  # not exec: the GUI goes on


class LossPlot:
    """A small live chart of the training loss (and gamma x mean, dashed), drawn
    into a pixmap shown by a label."""

    def __init__(self, width: int = 240, height: int = 140):
        self.widget = qt.QLabel()
        self.size = (width, height)
        self.widget.setMinimumSize(width, height)
        self.draw([], None)

    def draw(self, history: list[dict], gamma: float | None) -> None:
        width, height = self.size
        pixmap = qt.QPixmap(width, height)
        pixmap.fill(qt.QColor("white"))
        painter = qt.QPainter(pixmap)
        font = painter.font()
        font.setPixelSize(10)
        painter.setFont(font)
        painter.setPen(qt.QColor("#888888"))
        left = 44  # room for the value labels
        painter.drawRect(left, 5, width - left - 5, height - 25)
        losses = [float(r["loss"]) for r in history]
        if losses:
            series = [(losses, qt.QColor("#1f4e99"), False)]
            if gamma:
                series.append(([gamma * v for v in losses], qt.QColor("#c0392b"), True))
            top = max(max(values) for values, _, _ in series)
            bottom = min(min(values) for values, _, _ in series)
            span = max(top - bottom, 1e-12)
            for values, colour, dashed in series:
                pen = qt.QPen(colour)
                pen.setWidth(2)
                if dashed:
                    pen.setStyle(qt.Qt.DashLine)
                painter.setPen(pen)
                points = [(left + (width - left - 5) * (i / max(len(values) - 1, 1)), 5 + (height - 25) * (1 - (v - bottom) / span))
                          for i, v in enumerate(values)]
                for (x0, y0), (x1, y1) in zip(points, points[1:]):
                    painter.drawLine(int(x0), int(y0), int(x1), int(y1))
            painter.setPen(qt.QColor("black"))
            painter.drawText(2, 14, f"{top:.3g}")
            painter.drawText(2, height - 22, f"{bottom:.3g}")
            painter.drawText(left, height - 6, f"epochs 1–{int(float(history[-1]['epoch']))}" + (", dashed: γ×mean" if gamma else ""))
        painter.end()
        self.widget.setPixmap(pixmap)


class TrainPanel:
    """Choose healthy scans, model, schedule, γ; start, follow, cancel a training run."""

    def __init__(self, logic, parent=None):
        self.logic = logic
        self.job = None
        self.history, self.removed = [], []
        self.chart_node = None
        self.on_finished = None  # called with the run folder when a run completes
        self.widget = qt.QWidget(parent)
        form = qt.QFormLayout(self.widget)
        self.data, data_row = _path_field("folder or manifest of healthy scans", True, self.widget)
        self.out, out_row = _path_field("new output folder for the run", True, self.widget)
        self.config, config_row = _path_field("optional JSON file of more settings", False, self.widget)
        self.model = qt.QComboBox()
        self.model.addItems(list(models()))
        self.model.setCurrentText(TrainSettings.model)  # the default model, whatever the registry's order
        self.size = qt.QComboBox()
        self.size.addItems(["small", "paper"])
        self.size.setToolTip("small: a CPU-sized model; paper: the paper's model (for a GPU)")
        self.epochs = qt.QSpinBox()
        self.epochs.setRange(1, 100000)
        self.epochs.setValue(TrainSettings.epochs)
        self.reinit_at = qt.QLineEdit(TrainSettings.reinit_at)
        self.reinit_at.setToolTip("re-initialise the weights after these epochs, e.g. 50,100 (the paper); 'none'")
        self.outlier_removal = qt.QCheckBox("remove outliers during training")
        self.outlier_removal.setChecked(TrainSettings.outlier_removal)
        self.gamma = qt.QDoubleSpinBox()
        self.gamma.setRange(1.0, 3.0)
        self.gamma.setSingleStep(0.05)
        self.gamma.setDecimals(2)
        self.gamma.setValue(TrainSettings.gamma)
        self.gamma.setToolTip("a scan is removed when its loss exceeds γ × the epoch's mean loss")
        self.outlier_every = qt.QSpinBox()
        self.outlier_every.setRange(1, 1000)
        self.outlier_every.setValue(TrainSettings.outlier_every)
        self.removal_score = qt.QComboBox()
        self.removal_score.addItems(list(REMOVAL_SCORES))
        self.removal_score.setCurrentText(TrainSettings.removal_score)
        self.removal_score.setToolTip("what is compared with γ × its mean: the training loss (the paper's rule); a sample "
                                      "score of the reconstruction-error map calibrated on the validation scans (3D models); "
                                      "or audit: each scan's out-of-fold audit score, once, before training (3D models)")
        self.device = qt.QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(TrainSettings.device)
        self.start = qt.QPushButton("Start training")
        self.cancel = qt.QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.progress = qt.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = qt.QLabel("idle")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        for label, widget in (("Healthy scans", data_row), ("Output folder", out_row), ("Settings file", config_row), ("Model", self.model),
                              ("Size", self.size), ("Epochs", self.epochs), ("Re-initialise after", self.reinit_at),
                              ("", self.outlier_removal), ("γ (gamma)", self.gamma), ("Remove every (epochs)", self.outlier_every),
                              ("Removal score", self.removal_score),
                              ("Device", self.device), ("", _row(self.start, self.cancel)), ("Progress", self.progress),
                              ("Status", self.status), ("Loss", self.plot.widget)):
            form.addRow(label, widget)
        self.outlier_removal.toggled.connect(lambda on: [w.setEnabled(on) for w in (self.gamma, self.outlier_every, self.removal_score)])
        self.start.clicked.connect(self.start_training)
        self.cancel.clicked.connect(self.cancel_training)
        self.timer = _poll_timer(self.poll)
        self.logic.watch_scene(on_closed=self.scene_closed)

    def scene_closed(self) -> None:
        """The loss chart node went with the scene; the next epoch makes a new one."""
        self.chart_node = None

    def settings(self) -> TrainSettings:
        return TrainSettings(
            data=read(self.data, "text").strip(), out=read(self.out, "text").strip(), model=read(self.model, "currentText"),
            size=read(self.size, "currentText"), epochs=int(read(self.epochs, "value")),
            outlier_removal=self.outlier_removal.isChecked(),
            gamma=float(read(self.gamma, "value")), outlier_every=int(read(self.outlier_every, "value")),
            removal_score=read(self.removal_score, "currentText"),
            reinit_at=read(self.reinit_at, "text").strip() or "none", device=read(self.device, "currentText"),
            extra=["--config", read(self.config, "text").strip()] if read(self.config, "text").strip() else [],
        )

    def start_training(self) -> None:
        if self.job is not None and self.job.running:
            return
        try:
            self.job = self.logic.start_training(self.settings())
        except (ValueError, OSError) as error:
            _message(self.widget, "Cannot start training", str(error))
            return
        self.history, self.removed = [], []
        self.status.setText("starting…")
        self.progress.setRange(0, 0)  # busy until the first event
        self.start.setEnabled(False)
        self.cancel.setEnabled(True)
        self.timer.start()

    def cancel_training(self) -> None:
        if self.job is not None and self.job.running:
            self.status.setText("stopping… (the run can be resumed)")
            self.job.cancel()

    def poll(self) -> None:
        """Take the events that arrived; update progress, status and the chart."""
        if self.job is None:
            return
        for event in self.job.poll():
            self.handle(event)
        if self.job.finished:
            self.timer.stop()
            self.start.setEnabled(True)
            self.cancel.setEnabled(False)
            error = self.job.error_message()
            if error:
                self.progress.setRange(0, 1)
                self.status.setText("failed: " + error.splitlines()[-1])
                _message(self.widget, "Training failed", error)

    def handle(self, record: dict) -> None:
        """One event of the run (a JSON line of `uad train --events`, `uadcore.train.events`)."""
        event = parse_event(record)
        handler = {Start: self._started, Epoch: self._epoch_done, Removed: self._removed, Estimate: self._estimated,
                   RemovalHeld: self._removal_held, Stopped: self._stopped, Done: self._done, Error: self._failed}.get(type(event))
        if handler is not None:
            handler(event)

    def _started(self, event: Start) -> None:
        self.progress.setRange(0, event.epochs)
        self.progress.setValue(event.first_epoch - 1)
        self.status.setText(f"training {event.model} on {event.scans} scans ({event.device})")

    def _epoch_done(self, event: Epoch) -> None:
        self.history.append(event.to_record())
        self.progress.setRange(0, event.epochs)
        self.progress.setValue(event.epoch)
        stage = f" [{event.stage}]" if event.stage else ""
        self.status.setText(f"epoch {event.epoch} / {event.epochs}{stage}: loss {event.loss:.5f}, "
                            f"{event.kept} kept, {event.removed} removed")
        gamma = float(read(self.gamma, "value")) if self.outlier_removal.isChecked() else None
        self.plot.draw(self.history, gamma)
        self.chart_node = loss_chart(self.logic.scene, self.history, gamma, chart=self.chart_node)

    def _removed(self, event: Removed) -> None:
        self.removed.extend(event.samples)

    def _estimated(self, event: Estimate) -> None:
        self.status.setText(f"epoch {event.epoch} took {event.seconds:.0f} s: about {event.hours:.1f} hours "
                            f"for {event.epochs} epochs" + (f"; {event.advice}" if event.advice else ""))

    def _removal_held(self, event: RemovalHeld) -> None:
        self.status.setText(f"epoch {event.epoch}: outlier removal would keep only {event.would_keep} of "
                            f"{event.scans} scans; removed none (γ too low?)")

    def _stopped(self, event: Stopped) -> None:
        self.status.setText(f"stopped after epoch {event.epoch}; resume with: {event.resume}" if event.resume
                            else "stopped before the first epoch ended: nothing was trained")

    def _done(self, event: Done) -> None:
        self.progress.setValue(read(self.progress, "maximum"))
        self.status.setText(f"done: {event.epochs} epochs, {event.removed} scans removed ({event.removed_unhealthy} "
                            f"labelled unhealthy); run in {event.run}"
                            + ("; the validation loss was still falling: train longer" if event.still_improving else ""))
        if self.on_finished:
            self.on_finished(event.run)

    def _failed(self, event: Error) -> None:
        self.status.setText(f"error: {event.message}")


class OutlierPanel:
    """Review a training set: every scan of a run or of an audit ranked, the most
    suspicious first (`uadcore.review`); the selected one shown with its map, the
    views at the map's peak; keep or exclude with a reason; the curated manifest
    exported with the decisions beside it; train again from it. An audit of a
    folder of scans (`uad audit`) runs in the background."""

    # "#": the review's order, the rank of a ranked scan (they come first), then the scans without a score
    COLUMNS = ("#", "scan", "score", "label", "removed", "decision", "reason")

    def __init__(self, logic, train_panel: TrainPanel | None = None, parent=None):
        self.logic = logic
        self.train_panel = train_panel
        self.rows, self.names = [], []
        self.table_node = None
        self.last_shown = None
        self.widget = qt.QWidget(parent)
        layout = qt.QVBoxLayout(self.widget)
        self.run, run_row = _path_field("run folder, or audit folder", True, self.widget)
        self.load = qt.QPushButton("Load")
        self.load.setToolTip("every training scan of a run, or every scan of an audit, ranked")
        layout.addWidget(_row(run_row, self.load))
        self.data, data_row = _path_field("scans to audit: a folder or manifest", True, self.widget)
        self.audit = qt.QPushButton("Audit")
        self.audit.setToolTip("score every scan with a model trained without it (5 folds, normative: about a minute "
                              "for 100 scans); the audit is written to the folder above, which must be new")
        layout.addWidget(_row(data_row, self.audit))
        self.table = qt.QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().setVisible(False)  # the "#" column numbers the rows, in the review's order
        layout.addWidget(self.table)
        self.reason = qt.QLineEdit()
        self.reason.setPlaceholderText("reason (kept with the decision)")
        self.keep = qt.QPushButton("Keep")
        self.keep.setToolTip("the scan belongs in the training set")
        self.exclude = qt.QPushButton("Exclude")
        self.exclude.setToolTip("the scan leaves the training set")
        layout.addWidget(_row(self.reason, self.keep, self.exclude))
        self.manifest, manifest_row = _path_field("curated manifest to write (CSV)", False, self.widget)
        self.export = qt.QPushButton("Export curated manifest")
        self.retrain = qt.QPushButton("Train again from it")
        layout.addWidget(manifest_row)
        layout.addWidget(_row(self.export, self.retrain))
        self.status = qt.QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.load.clicked.connect(self.load_run)
        self.audit.clicked.connect(self.start_audit)
        self.table.itemSelectionChanged.connect(self.show_selected)
        self.keep.clicked.connect(lambda: self.mark("keep"))
        self.exclude.clicked.connect(lambda: self.mark("exclude"))
        self.export.clicked.connect(self.export_manifest)
        self.retrain.clicked.connect(self.train_again)
        self.job = None  # the background map of the selected scan (a `MapJob`)
        self.audit_job = None  # a running `uad audit`
        self.timer = _poll_timer(self.poll)
        self.logic.watch_scene(on_closed=self.scene_closed)

    def scene_closed(self) -> None:
        """The table node and the scan shown went with the scene; the list stays."""
        self.table_node = None
        self.last_shown = None

    def folder(self) -> str:
        return read(self.run, "text").strip()

    def load_run(self, run: str | None = None) -> None:
        """Fill the table from a run or an audit folder (the field's, or ``run``)."""
        if run:
            self.run.setText(run)
        try:
            self.rows = self.logic.review(self.folder())
        except Exception as error:
            _message(self.widget, "Cannot review this folder", str(error))
            return
        self.fill()
        self.table_node = outlier_table(self.logic.scene, self.rows, table=self.table_node)
        excluded = sum(row["decision"] == "exclude" for row in self.rows)
        ranked = sum(row["rank"] is not None for row in self.rows)
        self.status.setText(f"{len(self.rows)} scans, {ranked} ranked (the most suspicious first), {excluded} excluded; "
                            "select one to see it with its map")
        if not read(self.manifest, "text").strip():
            self.manifest.setText(os.path.join(self.folder(), "curated.csv"))

    def fill(self) -> None:
        names = self.names = short_names([row["path"] for row in self.rows])
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.rows))
        for index, row in enumerate(self.rows):
            values = (index + 1, names[index],
                      round(row["score"], 4) if row["score"] is not None else "", row["label"], row["removed"],
                      row["decision"], row["reason"])
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem()
                item.setData(qt.Qt.DisplayRole, value)  # numbers sort as numbers
                item.setData(qt.Qt.UserRole, index)
                item.setToolTip(row["path"] if column != 2 else f"scored by {row['scored_by']}")
                self.table.setItem(index, column, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, qt.Qt.AscendingOrder)
        self.table.resizeColumnsToContents()

    def selected_row(self) -> dict | None:
        items = self.table.selectedItems()
        return self.rows[int(items[0].data(qt.Qt.UserRole))] if items else None

    def show_selected(self) -> None:
        """Load the selected scan at once with its map: the audit's map file where
        there is one; otherwise computed in a background job by the run that maps it
        (`poll` overlays it), so the GUI never waits for the scan's preparation."""
        row = self.selected_row()
        if row is None:
            return
        if self.job is not None and self.job.running:
            self.job.cancel()  # another scan was chosen: that map is no longer wanted
        self.job = None
        try:
            node = self.logic.load_volume(row["path"])
            if row["map"] and os.path.isfile(row["map"]):
                self._shown(row, {"volume_node": node, **self.logic.show_map_file(node, row["map"], threshold=row.get("threshold"))})
                return
            if not row["run"]:
                self.status.setText(f"{self.names[self.rows.index(row)]}: no map (this audit was run without --maps)")
                return
            self.job = self.logic.start_map(node, row["run"])  # calibrated where the run holds a calibration
        except Exception as error:  # a scan moved or unreadable: say so, keep going
            _message(self.widget, "Cannot show this scan", f"{row['path']}: {error}")
            return
        self.status.setText(f"{os.path.basename(row['path'])}: computing its map in the background…")
        self.timer.start()

    def _shown(self, row: dict, shown: dict) -> None:
        self.last_shown = shown
        score = f"score {row['score']:.4f} ({row['scored_by']}), rank {row['rank']}" if row["score"] is not None else "not ranked"
        self.status.setText(f"{self.names[self.rows.index(row)]}: {score}; the views are at the map's peak")

    def poll(self) -> None:
        """Follow the two background jobs: an audit, and the selected scan's map."""
        if self.audit_job is not None and self.audit_job.finished:
            self._audit_finished()
        map_job = self.job if self.job is not None and not self.job.running else None
        if map_job is not None:
            self.job = None
        if self.job is None and self.audit_job is None:
            self.timer.stop()
        if map_job is None or map_job.job.cancelled:
            return
        name = map_job.volume_node.GetName()
        try:
            shown = {"volume_node": map_job.volume_node, **self.logic.finish_map(map_job)}
        except Exception as error:
            _message(self.widget, "Cannot show this scan's map", f"{name}: {error}")
            return
        row = self.selected_row()
        if row is not None:
            self._shown(row, shown)
        self.last_shown = shown

    def start_audit(self) -> None:
        data, out = read(self.data, "text").strip(), self.folder()
        if not data or not out:
            _message(self.widget, "Cannot audit", "choose the scans to audit and a new folder for the audit")
            return
        self.audit_job = self.logic.start_audit(data, out)
        self.audit.setEnabled(False)
        self.status.setText(f"auditing {data}: every scan scored by a model trained without it…")
        self.timer.start()

    def _audit_finished(self) -> None:
        job, self.audit_job = self.audit_job, None
        self.audit.setEnabled(True)
        error = job.error_message()
        if error:
            self.status.setText("audit failed: " + error.splitlines()[-1])
            _message(self.widget, "Audit failed", error)
            return
        self.load_run()

    def mark(self, decision: str) -> None:
        row = self.selected_row()
        if row is None:
            return
        decide(row, decision, read(self.reason, "text"))
        columns = {"decision": row["decision"], "reason": row["reason"]}
        for item in self.table.selectedItems():
            name = self.COLUMNS[item.column()]
            if name in columns:
                item.setData(qt.Qt.DisplayRole, columns[name])
        self.reason.setText("")
        self.table_node = outlier_table(self.logic.scene, self.rows, table=self.table_node)

    def export_manifest(self) -> str | None:
        try:
            path, decisions = self.logic.export_review(self.folder(), self.rows, read(self.manifest, "text").strip())
        except Exception as error:
            _message(self.widget, "Cannot export", str(error))
            return None
        kept = sum(row["decision"] == "keep" for row in self.rows)
        self.status.setText(f"curated manifest written: {path} ({kept} of {len(self.rows)} reviewed scans kept); "
                            f"the decisions: {decisions}")
        return path

    def train_again(self) -> None:
        path = self.export_manifest()
        if path and self.train_panel is not None:
            self.train_panel.data.setText(path)
            self.train_panel.out.setText(self.folder().rstrip("/") + "-curated")
            self.train_panel.start_training()


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
        self.run, run_row = _path_field("trained run folder", True, self.widget)
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
        self.fpr = qt.QComboBox()
        for label, _ in FPR_CHOICES:
            self.fpr.addItem(label)
        self.fpr.setCurrentIndex(2)
        self.score = qt.QLabel("")
        self.score.setWordWrap(True)
        self.progress = qt.QProgressBar()
        self.progress.setRange(0, 1)
        self.timer = _poll_timer(self.poll)
        self.segment = qt.QPushButton("Create segmentation")
        for label, widget in (("Input volume", _row(self.volume, self.refresh)), ("Trained run", run_row), ("Map", self.kind),
                              ("", self.raw), ("Sample score", self.statistic), ("", self.compute), ("Opacity", self.opacity), ("Threshold", self.threshold),
                              ("Threshold at FPR", self.fpr), ("Progress", self.progress), ("Score", self.score), ("", self.segment)):
            form.addRow(label, widget)
        self.refresh.clicked.connect(self.list_volumes)
        self.compute.clicked.connect(self.compute_map)
        self.opacity.valueChanged.connect(lambda value: set_opacity(self.logic.scene, value / 100.0))
        self.threshold.valueChanged.connect(self._threshold_moved)
        self.fpr.currentIndexChanged.connect(self._fpr_chosen)
        self.segment.clicked.connect(self.create_segmentation)
        self.list_volumes()
        self.logic.watch_scene(on_closed=self.scene_closed, on_nodes_changed=self.list_volumes)

    def scene_closed(self) -> None:
        """The map and its nodes went with the scene: forget them, so the controls
        act on nothing instead of on deleted nodes."""
        self.result = None
        self.score.setText("")
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
            _message(self.widget, "No volume", "load a scan first, then choose it as the input volume")
            return
        kind = None if int(read(self.kind, "currentIndex")) == 0 else read(self.kind, "currentText")
        statistic = None if int(read(self.statistic, "currentIndex")) == 0 else read(self.statistic, "currentText")
        try:
            self.job = self.logic.start_map(node, read(self.run, "text").strip(), kind, raw=bool(self.raw.isChecked()),
                                            statistic=statistic)
        except Exception as error:
            _message(self.widget, "Cannot compute the map", str(error))
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
            _message(self.widget, "Cannot compute the map", str(error))
            return
        result = self.result
        self.score.setText(score_words(result["score"], result["sample_score"], result["kind"], result["calibrated"],
                                       result["percentile"], result["reference_scans"]))
        self._sync_threshold_slider()

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

    def _threshold_moved(self, position: int) -> None:
        if self.result is None:
            return
        low, high = self._value_range()
        set_threshold(self.result["map_node"], low + (high - low) * position / 1000.0)

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

    def create_segmentation(self):
        if self.result is None:
            return None
        node = self.result["map_node"]
        return map_to_segmentation(self.logic.scene, node, node.GetDisplayNode().GetLowerThreshold())


class EvaluatePanel:
    """Metrics of a run on a labelled manifest (a background `uad evaluate`), as a
    table and the ROC curves."""

    KEYS = ("map", "sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice")

    def __init__(self, logic, parent=None):
        self.logic = logic
        self.job = None
        self.report = None
        self.widget = qt.QWidget(parent)
        layout = qt.QVBoxLayout(self.widget)
        form = qt.QFormLayout()
        self.run, run_row = _path_field("trained run folder", True, self.widget)
        self.manifest, manifest_row = _path_field("labelled manifest of unseen scans", False, self.widget)
        self.kind = qt.QComboBox()
        self.kind.addItems(["all", *map_kinds()])
        self.start = qt.QPushButton("Run evaluation")
        form.addRow("Trained run", run_row)
        form.addRow("Test scans", manifest_row)
        form.addRow("Map kinds", self.kind)
        form.addRow("", self.start)
        layout.addLayout(form)
        self.status = qt.QLabel("")
        layout.addWidget(self.status)
        self.table = qt.QTableWidget(0, len(self.KEYS))
        self.table.setHorizontalHeaderLabels(list(self.KEYS))
        layout.addWidget(self.table)
        self.roc = qt.QLabel()
        layout.addWidget(self.roc)
        self.start.clicked.connect(self.run_evaluation)
        self.timer = _poll_timer(self.poll)

    def run_evaluation(self) -> None:
        self.job = self.logic.start_evaluation(read(self.run, "text").strip(), read(self.manifest, "text").strip(), read(self.kind, "currentText"))
        self.status.setText("evaluating… (scans are read and scored in the background)")
        self.start.setEnabled(False)
        self.timer.start()

    def poll(self) -> None:
        if self.job is None:
            return
        for payload in self.job.poll():
            self.report = payload
        if self.job.finished:
            self.timer.stop()
            self.start.setEnabled(True)
            error = self.job.error_message()
            if error or self.report is None:
                self.status.setText("evaluation failed")
                _message(self.widget, "Evaluation failed", error or "no result")
                return
            self.show(self.report)

    def show(self, report: dict) -> None:
        """The JSON of `uad evaluate --json`: one report, or {"maps": {kind: report}}."""
        reports = [EvaluationReport.from_dict(r) for r in (report["maps"].values() if "maps" in report else [report])]
        self.table.setRowCount(len(reports))
        for row, values in enumerate(reports):
            for column, key in enumerate(self.KEYS):
                value = values.metric(key)
                self.table.setItem(row, column, qt.QTableWidgetItem(f"{value:.3f}" if isinstance(value, float) else str(value if value is not None else "-")))
        self.table.resizeColumnsToContents()
        self.status.setText(f"{reports[0].n} scans ({reports[0].healthy} healthy, {reports[0].unhealthy} unhealthy)")
        if report.get("roc_plot") and os.path.exists(report["roc_plot"]):
            self.roc.setPixmap(qt.QPixmap(report["roc_plot"]).scaledToWidth(360))
