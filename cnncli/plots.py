"""Pictures where they say more than numbers: curves, confusion matrices, inputs, feature maps.

Every function renders off-screen (Agg) and returns PNG bytes or writes a file atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

from cnncli.atomic import write_file

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure_png(figure) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curves_png(history: list[dict]) -> bytes:
    """Loss and accuracy per epoch, training and validation (an ensemble's members one after another)."""
    members = {record.get("member", 1) for record in history}
    epochs = list(range(1, len(history) + 1)) if len(members) > 1 else [record["epoch"] for record in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        axis.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="train")
        if history and f"val_{key}" in history[0]:
            axis.plot(epochs, [r[f"val_{key}"] for r in history], marker="o", label="val")
        axis.set_xlabel("epoch" if len(members) == 1 else f"epoch ({len(members)} members one after another)")
        axis.set_title(key)
        axis.grid(alpha=0.3)
        axis.legend()
    return figure_png(figure)


def confusion_png(report: dict) -> bytes:
    """The confusion matrix of a classification report: rows true, columns predicted."""
    labels, matrix = report["labels"], report["confusion_matrix"]
    size = max(3.0, 0.45 * len(labels) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"accuracy {report['accuracy']:.4f} (n={report['n']})")
    if len(labels) <= 20:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > peak / 2 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return figure_png(figure)


def save_image(tensor, path: Path, title: str = "") -> None:
    """A (C, H, W) image tensor (uint8 or float) as a PNG with its pixel grid visible."""
    array = tensor.float().numpy()
    figure, axis = plt.subplots(figsize=(4, 4))
    if array.shape[0] == 1:
        axis.imshow(array[0], cmap="gray", interpolation="nearest")
    else:
        peak = 255.0 if array.max() > 1 else 1.0
        axis.imshow((array.transpose(1, 2, 0) / peak).clip(0, 1), interpolation="nearest")
    axis.set_title(title)
    axis.axis("off")
    write_file(path, figure_png(figure))


def feature_maps_png(maps, title: str, limit: int = 32) -> bytes:
    """The first `limit` channels of a (C, H, W) activation as a grid of small images."""
    maps = maps.float()
    count = min(limit, maps.shape[0])
    columns = min(8, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.4 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(maps[index].numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
            axis.set_title(str(index), fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure_png(figure)
