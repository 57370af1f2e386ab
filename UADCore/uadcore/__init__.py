"""UADCore: unsupervised anomaly detection for brain MRI and other medical images.

The engine behind the `uad` command and the SlicerUAD extension. It never imports
slicer, qt, ctk, PyQt5 or SlicerUADLib (`Testing/test_imports.py` keeps that
promise); `uad gui` is SlicerUADLib's command, found through an entry point.
"""

__version__ = "0.1.0"
