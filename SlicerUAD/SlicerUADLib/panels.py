"""The four panels: Train, Outlier review, Anomaly map, Evaluate.

Each is a plain class holding its ``widget`` (no Qt subclassing, so PythonQt and
PyQt5 behave alike), built on a `UADLogic` it receives, written against
`qtcompat`. Long work runs in background jobs followed by a timer; the GUI never
waits on them.

One module each (`train_panel`, `outlier_panel`, `map_panel`, `evaluate_panel`),
the small widgets they share in `widgets`; this module names the four.
"""

from SlicerUADLib.evaluate_panel import EvaluatePanel
from SlicerUADLib.map_panel import MapPanel
from SlicerUADLib.outlier_panel import OutlierPanel
from SlicerUADLib.train_panel import TrainPanel

__all__ = ["EvaluatePanel", "MapPanel", "OutlierPanel", "TrainPanel"]
