"""Scene logic for a training run: the review of its scans as a table node and its
loss curve as a plot chart. Every function takes the MRML scene explicitly.

The rows are those of a review (`uadcore.review`), the history that of
RUN/history.csv (or of the training events as they arrive).
"""

from __future__ import annotations

OUTLIER_COLUMNS = (("rank", "rank"), ("path", "scan"), ("score", "score"), ("scored_by", "scored by"), ("label", "label"),
                   ("removed", "removed"), ("decision", "decision"), ("reason", "reason"), ("reviewer", "reviewer"),
                   ("decided_at", "decided at"))


def outlier_table(scene, rows: list[dict], name: str = "UAD training set review", table=None):
    """A table node with one row per reviewed scan (`OUTLIER_COLUMNS`: rank, scan,
    score, ..., the decision and its reason). Fills ``table`` when given (updating it
    in place), else a new node."""
    import slicer

    if table is None:
        table = slicer.vtkMRMLTableNode()
        table.SetName(name)
        scene.AddNode(table)
    table.RemoveAllColumns()
    for _, title in OUTLIER_COLUMNS:
        table.AddColumn().SetName(title)
    for row in rows:
        index = table.AddEmptyRow()
        for column, (key, _) in enumerate(OUTLIER_COLUMNS):
            value = row.get(key)
            table.SetCellText(index, column, "" if value is None else str(value))
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

