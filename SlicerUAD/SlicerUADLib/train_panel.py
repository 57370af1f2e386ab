"""The Train panel: a model trained in a background `uad train`, followed through
its events with a progress bar and a live loss chart; cancel keeps a resumable
checkpoint.
"""

from __future__ import annotations

from uadcore.device import DEVICES
from uadcore.train.config import REMOVAL_SCORES
from uadcore.train.events import Done, Epoch, Error, Estimate, RemovalHeld, Removed, Start, Stopped, parse_event

from SlicerUADLib.logic import TrainSettings, models
from SlicerUADLib.qtcompat import qt, read
from SlicerUADLib.run_nodes import loss_chart
from SlicerUADLib.widgets import message, path_field, poll_timer, side_by_side


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
        self.data, data_row = path_field("folder or manifest of healthy scans", True, self.widget)
        self.out, out_row = path_field("new output folder for the run", True, self.widget)
        self.config, config_row = path_field("optional JSON file of more settings", False, self.widget)
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
                              ("Device", self.device), ("", side_by_side(self.start, self.cancel)), ("Progress", self.progress),
                              ("Status", self.status), ("Loss", self.plot.widget)):
            form.addRow(label, widget)
        self.outlier_removal.toggled.connect(lambda on: [w.setEnabled(on) for w in (self.gamma, self.outlier_every, self.removal_score)])
        self.start.clicked.connect(self.start_training)
        self.cancel.clicked.connect(self.cancel_training)
        self.timer = poll_timer(self.poll)
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
            message(self.widget, "Cannot start training", str(error))
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
                message(self.widget, "Training failed", error)

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
