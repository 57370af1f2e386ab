"""UADCore: unsupervised anomaly detection for brain MRI and other medical images.

The engine behind the `uad` command and the SlicerUAD extension. It never imports
slicer, qt, ctk or PyQt5.
"""

__version__ = "0.1.0"
