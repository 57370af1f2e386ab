"""Pictures for reports: a scan slice with its anomaly map and lesion outline, and
the training loss with its outlier removals. PNG files via matplotlib (Agg)."""

from __future__ import annotations

import textwrap

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overlay_png(image: np.ndarray, anomaly: np.ndarray, path: str, mask: np.ndarray | None = None, title: str = "") -> str:
    """Axial slice through the map's peak (or the lesion's largest slice) of an RAS
    model-grid volume: grey scan, inferno map above its 95th percentile, lesion in
    cyan. image, anomaly, mask: (I, J, K)."""
    plt = _pyplot()
    if mask is not None and mask.any():
        k = int(np.argmax(mask.sum(axis=(0, 1))))
    else:
        k = int(np.unravel_index(np.argmax(anomaly), anomaly.shape)[2])
    shown = anomaly[:, :, k].T
    floor = np.percentile(anomaly[anomaly > 0], 95) if (anomaly > 0).any() else 0.0
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for axis in axes:
        axis.imshow(image[:, :, k].T, cmap="gray", origin="lower", vmin=0, vmax=1)
        axis.axis("off")
    axes[1].imshow(np.ma.masked_less_equal(shown, floor), cmap="inferno", origin="lower", alpha=0.8, vmin=floor, vmax=max(anomaly.max(), floor + 1e-6))
    if mask is not None and mask[:, :, k].any():
        axes[1].contour(mask[:, :, k].T, levels=[0.5], colors="cyan", linewidths=0.8)
        from matplotlib.lines import Line2D

        axes[1].legend(handles=[Line2D([], [], color="cyan", linewidth=0.8, label="lesion (its mask)")], loc="lower right",
                       fontsize=7, framealpha=0.6)
    axes[0].set_title("scan (model grid, axial)", fontsize=9)
    # wrapped, not cut: a title wider than its picture loses its end ("above 100 % of heal")
    axes[1].set_title(textwrap.fill(title or "anomaly map", 42), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def loss_png(history: list[dict], audit: list[dict], path: str) -> str:
    """Mean training loss per epoch, with the epochs where scans were removed."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot([h["epoch"] for h in history], [h["loss"] for h in history], color="black", linewidth=1.2, label="mean loss of kept scans")
    for epoch in sorted({int(row["epoch"]) for row in audit} - {0}):  # 0: left out before training
        axis.axvline(epoch, color="tab:red", alpha=0.4, linewidth=0.8)
    if audit:
        axis.plot([], [], color="tab:red", alpha=0.4, label="scans removed")
    axis.set_xlabel("epoch")
    axis.set_ylabel("L1 loss")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def roc_png(curves: dict, path: str, title: str = "") -> str:
    """Sample-level ROC curves: ``curves`` maps a name to (labels, scores)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4.2))
    for name, (labels, scores) in curves.items():
        if len(set(labels)) < 2:
            continue
        false_positive, true_positive, _ = roc_curve(labels, scores)
        axis.plot(false_positive, true_positive, label=f"{name} (AUROC {roc_auc_score(labels, scores):.3f})")
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=0.8)
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
