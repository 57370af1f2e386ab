"""The small widgets every panel uses: widgets side by side, a path field with a browse
button, short file names, the timer that follows a background job, a message box
that does not block.
"""

from __future__ import annotations

import os

from SlicerUADLib.qtcompat import qt


POLL_MS = 200


def side_by_side(*widgets):
    """One widget holding ``widgets`` in a row (a form row with a button beside its field)."""
    box = qt.QWidget()
    layout = qt.QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def path_field(placeholder: str, folder: bool, parent_widget):
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
    return edit, side_by_side(edit, browse)


def short_names(paths: list[str]) -> list[str]:
    """File names to show for ``paths``: the base name, with its folder where two
    share one (``brats18-a/t1.nii.gz``, ``brats18-b/t1.nii.gz``)."""
    from collections import Counter

    counts = Counter(os.path.basename(p) for p in paths)
    return [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) if counts[os.path.basename(p)] > 1
            else os.path.basename(p) for p in paths]


def poll_timer(poll) -> "qt.QTimer":
    """A timer (not started) calling ``poll`` every `POLL_MS` while a panel's job runs."""
    timer = qt.QTimer()
    timer.setInterval(POLL_MS)
    timer.timeout.connect(poll)
    return timer


def message(parent, title: str, text: str) -> None:
    box = qt.QMessageBox(parent)
    box.setIcon(qt.QMessageBox.Warning)
    box.setWindowTitle(title)
    box.setText(text.splitlines()[0] if text else title)
    box.setDetailedText(text)
    box.show()  # not exec: the GUI goes on
