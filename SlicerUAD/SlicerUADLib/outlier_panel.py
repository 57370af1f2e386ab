"""The Outlier review panel: a run's or an audit's ranking of every training scan,
each scan shown with its map at the peak, keep or exclude with a reason, and the
curated manifest exported with the decisions.
"""

from __future__ import annotations

import os

from uadcore.review import decide

from SlicerUADLib.qtcompat import qt, read
from SlicerUADLib.run_nodes import outlier_table
from SlicerUADLib.train_panel import TrainPanel
from SlicerUADLib.widgets import message, path_field, poll_timer, short_names, side_by_side


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
        self.run, run_row = path_field("run folder, or audit folder", True, self.widget)
        self.load = qt.QPushButton("Load")
        self.load.setToolTip("every training scan of a run, or every scan of an audit, ranked")
        layout.addWidget(side_by_side(run_row, self.load))
        self.data, data_row = path_field("scans to audit: a folder or manifest", True, self.widget)
        self.audit = qt.QPushButton("Audit")
        self.audit.setToolTip("score every scan with a model trained without it (5 folds, normative: about a minute "
                              "for 100 scans); the audit is written to the folder above, which must be new")
        layout.addWidget(side_by_side(data_row, self.audit))
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
        layout.addWidget(side_by_side(self.reason, self.keep, self.exclude))
        self.manifest, manifest_row = path_field("curated manifest to write (CSV)", False, self.widget)
        self.export = qt.QPushButton("Export curated manifest")
        self.retrain = qt.QPushButton("Train again from it")
        layout.addWidget(manifest_row)
        layout.addWidget(side_by_side(self.export, self.retrain))
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
        self.timer = poll_timer(self.poll)
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
            message(self.widget, "Cannot review this folder", str(error))
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
            # the audit's map kind, calibrated where the run holds a calibration
            self.job = self.logic.start_map(node, row["run"], row.get("map_kind"))
        except Exception as error:  # a scan moved or unreadable: say so, keep going
            message(self.widget, "Cannot show this scan", f"{row['path']}: {error}")
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
            message(self.widget, "Cannot show this scan's map", f"{name}: {error}")
            return
        row = self.selected_row()
        if row is not None:
            self._shown(row, shown)
        self.last_shown = shown

    def start_audit(self) -> None:
        data, out = read(self.data, "text").strip(), self.folder()
        if not data or not out:
            message(self.widget, "Cannot audit", "choose the scans to audit and a new folder for the audit")
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
            message(self.widget, "Audit failed", error)
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
            message(self.widget, "Cannot export", str(error))
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
