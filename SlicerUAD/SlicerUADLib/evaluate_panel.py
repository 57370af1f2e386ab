"""The Evaluate panel: a run's metrics on a labelled manifest from a background
`uad evaluate`, as a table and ROC curves.
"""

from __future__ import annotations

import os

from uadcore.evaluate import EvaluationReport

from SlicerUADLib.logic import map_kinds
from SlicerUADLib.qtcompat import qt, read
from SlicerUADLib.widgets import message, path_field, poll_timer


class EvaluatePanel:
    """Metrics of a run on a labelled manifest (a background `uad evaluate`), as a
    table and the ROC curves."""

    KEYS = ("map", "sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice")
    LESION_SCANS_KEYS = ("voxel_ap", "best_dice")  # again over the lesion scans alone, the pool papers report
    HEADERS = KEYS + tuple(f"{key} (lesion scans)" for key in LESION_SCANS_KEYS)

    def __init__(self, logic, parent=None):
        self.logic = logic
        self.job = None
        self.report = None
        self.widget = qt.QWidget(parent)
        layout = qt.QVBoxLayout(self.widget)
        form = qt.QFormLayout()
        self.run, run_row = path_field("trained run folder", True, self.widget)
        self.manifest, manifest_row = path_field("labelled manifest of unseen scans", False, self.widget)
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
        self.table = qt.QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(list(self.HEADERS))
        self.table.resizeColumnsToContents()  # the headers whole before any result ("sample_auroc", not "ample_auro")
        layout.addWidget(self.table)
        self.roc = qt.QLabel()
        layout.addWidget(self.roc)
        self.start.clicked.connect(self.run_evaluation)
        self.timer = poll_timer(self.poll)

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
                message(self.widget, "Evaluation failed", error or "no result")
                return
            self.show(self.report)

    def show(self, report: dict) -> None:
        """The JSON of `uad evaluate --json`: one report, or {"maps": {kind: report}}."""
        reports = [EvaluationReport.from_dict(r) for r in (report["maps"].values() if "maps" in report else [report])]
        self.table.setRowCount(len(reports))
        for row, values in enumerate(reports):
            alone = values.metric("lesion_scans_only") or {}
            cells = [values.metric(key) for key in self.KEYS] + [alone.get(key) for key in self.LESION_SCANS_KEYS]
            for column, value in enumerate(cells):
                self.table.setItem(row, column, qt.QTableWidgetItem(f"{value:.3f}" if isinstance(value, float) else str(value if value is not None else "-")))
        self.table.resizeColumnsToContents()
        self.status.setText(f"{reports[0].n} scans ({reports[0].healthy} healthy, {reports[0].unhealthy} unhealthy)")
        if report.get("roc_plot") and os.path.exists(report["roc_plot"]):
            self.roc.setPixmap(qt.QPixmap(report["roc_plot"]).scaledToWidth(360))
