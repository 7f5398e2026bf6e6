"""Pictures where they say more than numbers: curves, confusion matrices, inputs, feature maps,
filters, class probabilities, heat maps, calibration, and grids of samples.

Every function renders off-screen (Agg) and returns PNG bytes or writes a file atomically. Those
that draw samples take callables that draw into a matplotlib axis, so each modality draws its
own (Modality.draw_thumbnail) and nothing here knows about modalities.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import torch

from cnncli.files.atomic import write_file

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


def confusion_png(report: dict, normalised: bool = False) -> bytes:
    """The confusion matrix of a classification report: rows true, columns predicted; with
    `normalised`, each row divided by its count (so the diagonal is each class's recall)."""
    labels, counts = report["labels"], report["confusion_matrix"]
    matrix = [[n / max(sum(row), 1) for n in row] for row in counts] if normalised else counts
    size = max(3.0, 0.45 * len(labels) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalised else None)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    kind = ", rows normalised" if normalised else ""
    axis.set_title(f"accuracy {report['accuracy']:.4f} (n={report['n']}{kind})")
    if len(labels) <= 20:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                text = f"{value:.2f}" if normalised else str(value)
                axis.text(j, i, text, ha="center", va="center", fontsize=7 if normalised else 8,
                          color="white" if value > peak / 2 else "black")
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


def feature_maps_png(maps, title: str, limit: int = 32, upward: bool = False) -> bytes:
    """The first `limit` channels of a (C, H, W) activation as a grid of small images, each scaled
    to its own range and as wide as its map is (row 0 at the bottom when `upward`, as in a
    spectrogram); maps one cell high or wide (text) as one picture, a row per channel."""
    maps = maps.detach().float().cpu()[:limit]
    count, height, width = maps.shape
    if min(height, width) == 1:
        return matrix_png(maps.reshape(count, -1), title, "position", "channel")
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    tiles = (maps - low) / (high - low).clamp_min(1e-12)
    return _mosaic_png(tiles.flip(1) if upward else tiles, title, "viridis")


def _mosaic_png(tiles, title: str, colormap: str) -> bytes:
    """Tiles (N, H, W) in 0..1, or (N, H, W, 3) colours, as one picture with a gap and a number
    per tile: one image is drawn, so even 64 tiles render at once."""
    count, height, width = tiles.shape[:3]
    aspect = min(4.0, max(0.25, width / height))
    columns = min(count, 8 if aspect <= 1.5 else 4)
    rows = math.ceil(count / columns)
    gap_rows, gap_columns = max(1, height // 8), max(1, width // 8)
    canvas = torch.full((rows * (height + gap_rows), columns * (width + gap_columns), *tiles.shape[3:]), float("nan"))
    for index in range(count):
        top, left = (index // columns) * (height + gap_rows), (index % columns) * (width + gap_columns)
        canvas[top:top + height, left:left + width] = tiles[index]
    figure, axis = plt.subplots(figsize=(1.3 * aspect * columns, 1.3 * rows + 0.4))
    shown = canvas.nan_to_num(1.0) if canvas.dim() == 4 else canvas
    colours = matplotlib.colormaps[colormap].with_extremes(bad="white")
    axis.imshow(shown.numpy(), cmap=colours, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for index in range(count):
        axis.text((index % columns) * (width + gap_columns), (index // columns) * (height + gap_rows) - 0.5,
                  str(index), fontsize=6, va="bottom", ha="left")
    axis.axis("off")
    axis.set_title(title, fontsize=9, pad=10)
    return figure_png(figure)


def matrix_png(matrix, title: str, xlabel: str, ylabel: str = "") -> bytes:
    """A (rows, columns) matrix as one coloured picture: a block's output that is a vector (one
    row) or one value per position and channel."""
    matrix = matrix.detach().float().cpu()
    figure, axis = plt.subplots(figsize=(7, min(6.0, 0.12 * matrix.shape[0] + 0.9)))
    image = axis.imshow(matrix.numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
    if matrix.shape[0] == 1:
        axis.set_yticks([])
    axis.set_xlabel(xlabel, fontsize=8)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.03)
    return figure_png(figure)


def filters_png(weight, title: str, limit: int = 64) -> bytes:
    """A convolution's filters (out, in, kh, kw) as a grid: colour when they read three channels,
    else the mean over input channels (blue negative, red positive); each to its own scale."""
    weight = weight.detach().float().cpu()[:limit]
    if weight.shape[1] == 3:
        low = weight.amin(dim=(1, 2, 3), keepdim=True)
        high = weight.amax(dim=(1, 2, 3), keepdim=True)
        return _mosaic_png(((weight - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1), title, "coolwarm")
    mean = weight.mean(dim=1)
    peak = mean.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return _mosaic_png((mean / peak + 1) / 2, title, "coolwarm")


def probabilities_png(labels: Sequence[str], probabilities, top_k: int = 10) -> bytes:
    """The `top_k` most probable classes as horizontal bars, the most probable on top."""
    scores = [float(p) for p in probabilities]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]
    figure, axis = plt.subplots(figsize=(5, 0.32 * len(order) + 0.9))
    bars = axis.barh(range(len(order)), [scores[i] for i in order],
                     color=["tab:orange" if rank == 0 else "tab:blue" for rank in range(len(order))])
    axis.set_yticks(range(len(order)), [str(labels[i]) for i in order])
    axis.invert_yaxis()
    axis.set_xlim(0, 1.08)
    axis.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    axis.set_xlabel("probability")
    axis.set_title(f"top {len(order)} of {len(scores)} classes", fontsize=9)
    return figure_png(figure)


def overlay_heat(axis, heat, extent=None, origin: str = "upper") -> None:
    """Draw a 0..1 heat map (Grad-CAM) over what `axis` already shows, with the same extent."""
    axis.imshow(heat.detach().float().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1,
                interpolation="bilinear", extent=extent, origin=origin, aspect="auto")


def heatmap_png(picture, heat, title: str) -> bytes:
    """A (H, W) picture in grey with a same-sized heat map over it: the default Grad-CAM drawing."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5 * min(2.0, max(0.4, picture.shape[0] / picture.shape[1]))))
    axis.imshow(picture.detach().float().cpu().numpy(), cmap="gray", interpolation="nearest", aspect="auto")
    overlay_heat(axis, heat)
    axis.set_title(title, fontsize=9)
    axis.axis("off")
    return figure_png(figure)


Drawer = Callable[[object], None]  # draws one sample into the matplotlib axis it is given


def thumbnail_grid_png(rows: Sequence[tuple[str, Sequence[tuple[Drawer, str]]]], aspect: float = 1.0,
                       title: str = "") -> bytes:
    """A grid of samples: one row per (row label, [(draw, caption), ...]); each cell is `aspect`
    times as wide as it is high, and `draw(axis)` fills it (it may add a strip below the cell)."""
    columns = max([len(cells) for _, cells in rows] + [1])
    cell_height, cell_width = 1.9, 1.9 * aspect
    left, right, top, bottom, across, down = 0.45, 0.15, 0.35 + 0.3 * bool(title), 0.7, 0.15, 0.9  # inches
    width = left + right + columns * cell_width + (columns - 1) * across
    height = top + bottom + len(rows) * cell_height + (len(rows) - 1) * down
    figure, axes = plt.subplots(max(len(rows), 1), columns, squeeze=False, figsize=(width, height))
    figure.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                           wspace=across / cell_width, hspace=down / cell_height)
    for axis in axes.flat:
        axis.axis("off")
    for row_axes, (label, cells) in zip(axes, rows):
        for axis, (draw, caption) in zip(row_axes, cells):
            axis.axis("on")
            draw(axis)
            axis.set_title(caption, fontsize=7)
        if label:
            row_axes[0].text(-0.06, 0.5, label, transform=row_axes[0].transAxes, rotation=90, ha="right",
                             va="center", fontsize=10, weight="bold")
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    return figure_png(figure)


def per_class_png(report: dict) -> bytes:
    """Precision, recall and F1 of every class, side by side."""
    labels = report["labels"]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.55 * len(labels) + 2), 3.4))
    width = 0.27
    for offset, key in enumerate(("precision", "recall", "f1")):
        values = [report["per_class"][label][key] for label in labels]
        axis.bar([i + (offset - 1) * width for i in range(len(labels))], values, width, label=key)
    crowded = len(labels) > 8
    axis.set_xticks(range(len(labels)), labels, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    axis.set_ylim(0, 1.05)
    axis.set_title(f"per class (macro F1 {report['macro_f1']:.4f})", fontsize=9)
    axis.legend(fontsize=8, ncols=3, loc="lower right")
    axis.grid(axis="y", alpha=0.3)
    return figure_png(figure)


def reliability_png(bins: Sequence[dict], error: float) -> bytes:
    """Reliability diagram: accuracy against confidence per bin (a calibrated model sits on the
    diagonal), with the share of samples per bin below."""
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(4.6, 5.2), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in bins if b["count"]]
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.1
    axis.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width, align="edge",
             edgecolor="black", linewidth=0.5, label="accuracy")
    axis.bar([b["lower"] for b in filled], [b["confidence"] - b["accuracy"] for b in filled], width,
             bottom=[b["accuracy"] for b in filled], align="edge", facecolor="none", edgecolor="tab:red",
             hatch="//", linewidth=0.5, label="gap to confidence")
    axis.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability (expected calibration error {error:.4f})", fontsize=9)
    axis.legend(fontsize=8, loc="upper left")
    total = sum(b["count"] for b in bins) or 1
    counts.bar([b["lower"] for b in bins], [b["count"] / total for b in bins], width, align="edge", color="gray")
    counts.set_xlabel("confidence (top probability)")
    counts.set_ylabel("share")
    counts.set_xlim(0, 1)
    return figure_png(figure)


def histograms_png(values: dict[str, Sequence[float]]) -> bytes:
    """One histogram per measure of the samples (sizes, seconds, tokens), side by side."""
    figure, axes = plt.subplots(1, len(values), figsize=(3.4 * len(values), 2.8), squeeze=False)
    for axis, (name, found) in zip(axes[0], values.items()):
        axis.hist(found, bins=min(30, max(1, len(set(found)))), color="tab:blue")
        axis.set_title(f"{name} (n={len(found)})", fontsize=9)
        axis.set_ylabel("samples")
        axis.grid(alpha=0.3)
    return figure_png(figure)


def overview_png(picture, blocks: Sequence[tuple[str, torch.Tensor]], labels: Sequence[str], probabilities,
                 upward: bool = False, maps: int = 6) -> bytes:
    """The whole way at a glance, as CNN Explainer draws it: the picture the backbone reads, a
    column per block with its first `maps` outputs stacked (a strip for a vector, and for maps
    one cell wide a picture of positions down by channels across), then the five most probable
    classes. Row 0 of the maps is at the bottom when `upward` (spectrograms)."""
    height = 4.2  # inches of maps
    image = _unit(picture.detach().float().cpu().mean(0))
    columns = [("input", list(picture.shape), image.flip(0) if upward else image,
                height * min(1.2, max(0.5, image.shape[1] / image.shape[0])))]  # wide pictures squeezed
    for name, activation in blocks:
        column, width = _overview_column(activation.detach().float().cpu(), maps, upward, height / maps)
        columns.append((name, list(activation.shape), column, width))
    widths = [width for *_, width in columns] + [1.8]
    figure, axes = plt.subplots(1, len(widths), figsize=(sum(widths) * 1.25 + 0.6, height + 0.9),
                                gridspec_kw={"width_ratios": widths, "wspace": 0.25 * len(widths) / sum(widths)})
    for axis, (name, shape, column, _) in zip(axes, columns):
        colours = matplotlib.colormaps["gray" if name == "input" else "viridis"].with_extremes(bad="white")
        axis.imshow(column.numpy(), cmap=colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        axis.set_title(f"{name.replace('.', chr(10))}\n{'x'.join(map(str, shape))}", fontsize=6.5)
        axis.axis("off")
    scores = [float(p) for p in probabilities]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:5]
    bars = axes[-1]
    bars.barh(range(len(order)), [scores[i] for i in order], color=["tab:orange"] + ["tab:blue"] * 4)
    bars.set_yticks(range(len(order)), [str(labels[i]) for i in order], fontsize=7)
    bars.yaxis.tick_right()
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.tick_params(axis="x", labelsize=6)
    bars.set_title("probabilities", fontsize=7)
    return figure_png(figure)


def _unit(values: torch.Tensor) -> torch.Tensor:
    """Scaled to 0..1 (a constant becomes 0)."""
    return (values - values.min()) / (values.max() - values.min()).clamp_min(1e-12)


def _overview_column(activation: torch.Tensor, maps: int, upward: bool,
                     map_height: float) -> tuple[torch.Tensor, float]:
    """A block's column for the overview, and its width in inches when a map is `map_height` high."""
    if activation.dim() == 3 and min(activation.shape[1:]) > 1:
        count, height, width = min(maps, activation.shape[0]), *activation.shape[1:]
        gap = max(1, height // 6)
        column = torch.full((count * (height + gap) - gap, width), float("nan"))
        for index in range(count):
            tile = _unit(activation[index])
            column[index * (height + gap):index * (height + gap) + height] = tile.flip(0) if upward else tile
        return column, map_height * min(1.4, width / height)
    if activation.dim() == 3 and activation[0].numel() > 1:  # maps one cell wide (text): positions x channels
        return _unit(activation[:maps * 4].reshape(min(maps * 4, activation.shape[0]), -1).T), 0.9
    return _unit(activation.reshape(-1, 1)[:64]), 0.35
