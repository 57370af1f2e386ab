"""Scene logic for a training run: its removed scans as a table node and its loss
curve as a plot chart. Every function takes the MRML scene explicitly.

The rows and history are those of RUN/outliers.csv and RUN/history.csv (or of
the training events as they arrive): dicts with the keys written there.
"""

from __future__ import annotations

OUTLIER_COLUMNS = (("path", "scan"), ("epoch", "epoch removed"), ("loss_over_mean", "loss / mean"),
                   ("loss", "loss"), ("threshold", "threshold"), ("label", "label"), ("decision", "decision"))


def outlier_table(scene, rows: list[dict], name: str = "UAD removed scans", table=None):
    """A table node with one row per removed scan: scan, epoch removed, loss / mean,
    loss, threshold, label and the reviewer's decision ("exclude" until marked
    "keep"). Fills ``table`` when given (updating it in place), else a new node."""
    import slicer

    if table is None:
        table = slicer.vtkMRMLTableNode()
        table.SetName(name)
        scene.AddNode(table)
    table.RemoveAllColumns()
    numeric = {"epoch": "int", "loss_over_mean": "double", "loss": "double", "threshold": "double"}
    for key, title in OUTLIER_COLUMNS:
        column = table.AddColumn()
        column.SetName(title)
        if key in numeric:
            table.SetColumnType(title, _vtk_type(numeric[key]))
    for row in rows:
        index = table.AddEmptyRow()
        for column, (key, _) in enumerate(OUTLIER_COLUMNS):
            value = row.get(key, "exclude" if key == "decision" else "")
            table.SetCellText(index, column, str(value))
    return table


def loss_chart(scene, history: list[dict], gamma: float | None = None, name: str = "UAD training loss", chart=None):
    """A plot chart of the mean training loss per epoch and, when ``gamma`` is
    given, the removal threshold gamma x mean. Fills ``chart`` when given.
    Returns the chart node; its table node holds the values."""
    import slicer
    import vtk

    table_name = f"{name} values"
    values = scene.GetFirstNodeByName(table_name) if chart is not None else None
    if values is None:
        values = slicer.vtkMRMLTableNode()
        values.SetName(table_name)
        scene.AddNode(values)
    data = vtk.vtkTable()
    columns = [("epoch", [float(r["epoch"]) for r in history]), ("loss", [float(r["loss"]) for r in history])]
    if gamma is not None:
        columns.append(("threshold", [gamma * float(r["loss"]) for r in history]))
    for title, numbers in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(title)
        for number in numbers:
            array.InsertNextValue(number)
        data.AddColumn(array)
    values.SetAndObserveTable(data)

    if chart is None:
        chart = slicer.vtkMRMLPlotChartNode()
        chart.SetName(name)
        chart.SetXAxisTitle("epoch")
        chart.SetYAxisTitle("loss")
        scene.AddNode(chart)
        for title, _ in columns[1:]:
            series = slicer.vtkMRMLPlotSeriesNode()
            series.SetName(title)
            series.SetAndObserveTableNodeID(values.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(title)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            if title == "threshold":
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            scene.AddNode(series)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def _vtk_type(kind: str) -> int:
    import vtk

    return {"int": vtk.VTK_INT, "double": vtk.VTK_DOUBLE}[kind]
