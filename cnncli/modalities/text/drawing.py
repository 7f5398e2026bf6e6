"""Sentences drawn as the network reads them: the embedding matrix (one row per token) with a
score per token beside it as bars (saliency, Grad-CAM), and small coloured word lists for
grids of samples.
"""

from __future__ import annotations

import textwrap

import torch
from torch import nn


def tokens_png(tokens: list[str], ids: torch.Tensor, stem: nn.Module | None, scores: list[float] | None = None,
               score_title: str = "") -> bytes:
    """PNG: the sentence's embedding matrix (rows = tokens) and, given `scores`, one bar per
    token beside it (red pushes towards the class, blue away)."""
    from cnncli.output.plots import figure_png, plt

    tokens = tokens or ["(empty)"]
    panels = 1 + (scores is not None)
    height = max(2.5, 0.28 * len(tokens) + 1.2)
    figure, axes = plt.subplots(1, panels, figsize=(5 + 3 * (panels - 1), height), squeeze=False,
                                gridspec_kw={"width_ratios": [3, 2][:panels]})
    matrix_axis = axes[0][0]
    if stem is not None:
        with torch.no_grad():
            device = next(stem.parameters()).device
            picture = stem(ids.unsqueeze(0).to(device))[0, -1, :len(tokens)].cpu()  # the tuned channel of two
        matrix_axis.imshow(picture.numpy(), cmap="coolwarm", aspect="auto", interpolation="nearest")
        matrix_axis.set_xlabel(f"embedding dimension (of {picture.shape[1]})")
    else:
        matrix_axis.imshow(ids[:len(tokens)].unsqueeze(1).numpy(), cmap="viridis", aspect="auto")
        matrix_axis.set_xlabel("token id")
    matrix_axis.set_yticks(range(len(tokens)), tokens, fontsize=8)
    matrix_axis.set_title("as the network sees it", fontsize=9)
    if scores is not None:
        scores = scores[:len(tokens)]
        bar_axis = axes[0][1]
        bar_axis.barh(range(len(scores)), scores, color=["tab:red" if score > 0 else "tab:blue" for score in scores])
        bar_axis.set_ylim(len(tokens) - 0.5, -0.5)
        bar_axis.set_yticks(range(len(tokens)), tokens, fontsize=8)
        bar_axis.axvline(0, color="black", linewidth=0.6)
        bar_axis.set_title(textwrap.fill(score_title, 42), fontsize=9)
    return figure_png(figure)


def words_thumbnail(axis, tokens: list[str], scores: list[float] | None = None, font_size: float = 9.0) -> None:
    """The words wrapped to the width of `axis`, each on a background as red (pushing towards the
    class) or blue (away) as its score is strong; cut with an ellipsis when the cell is full."""
    axis.axis("off")
    figure = axis.figure
    box = axis.get_position()
    width_in, height_in = box.width * figure.get_figwidth(), box.height * figure.get_figheight()
    character = font_size * 0.62 / 72  # inches per character of a monospace font
    per_line = max(8, int(width_in / character))
    line_height = font_size * 1.9 / 72 / height_in
    peak = max((abs(score) for score in scores or []), default=0.0) or 1.0
    column, line = 0, 0
    for index, token in enumerate(tokens):
        if column and column + len(token) > per_line:
            column, line = 0, line + 1
        if (line + 1) * line_height > 1:
            axis.text(column * character / width_in, 1 - line * line_height, "...", fontsize=font_size,
                      family="monospace", va="top", transform=axis.transAxes)
            return
        colour = "white"
        if scores is not None and index < len(scores):
            strength = min(1.0, abs(scores[index]) / peak)
            colour = (1, 1 - 0.7 * strength, 1 - 0.7 * strength) if scores[index] > 0 else (
                1 - 0.7 * strength, 1 - 0.5 * strength, 1)
        axis.text(column * character / width_in, 1 - line * line_height, token, fontsize=font_size,
                  family="monospace", va="top", transform=axis.transAxes,
                  bbox={"boxstyle": "square,pad=0.1", "facecolor": colour, "edgecolor": "none"})
        column += len(token) + 1
