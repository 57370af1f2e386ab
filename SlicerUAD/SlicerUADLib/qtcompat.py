"""The small Qt layer the panels are written against: Slicer's PythonQt (``import
qt``) inside Slicer, PyQt5 outside it.

The panels use only what both offer: widget classes by name from `qt`, signals
connected with ``signal.connect(callable)``, setters (``setText``, ``setValue``)
and, for reading a value, `read` (PythonQt exposes Qt properties as attributes,
``edit.text``; PyQt5 as methods, ``edit.text()``).
"""

from __future__ import annotations

try:  # inside 3D Slicer
    import qt  # noqa: F401
    IN_SLICER = True
except ImportError:
    IN_SLICER = False
    from PyQt5 import QtCore, QtGui, QtWidgets

    class _PyQt5Namespace:
        """PyQt5's classes under one name, as PythonQt's ``qt`` module has them."""

        def __getattr__(self, name):
            for module in (QtWidgets, QtCore, QtGui):
                if hasattr(module, name):
                    return getattr(module, name)
            raise AttributeError(f"Qt has no {name}")

    qt = _PyQt5Namespace()


def read(widget, name: str):
    """A Qt property's value, e.g. ``read(edit, "text")``, in both bindings."""
    value = getattr(widget, name)
    return value() if callable(value) else value

