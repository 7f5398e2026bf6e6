"""How experiments read: the table of a tune study's trials, the table of compared runs, and the
comparison page (one self-contained HTML file: the table, and every run's curves on the same axes).

Values from data (paths, labels, recipe values) go in as rich Text or escaped HTML, never markup.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnncli.files.atomic import write_file
from cnncli.output.html import document, section, table, text


def _console(stream: TextIO) -> Console:
    return Console(file=stream) if stream.isatty() else Console(file=stream, width=160)


def short(value: object, width: int = 40) -> str:
    """A recipe value in a cell: as JSON (lists, sections), cut to `width` characters."""
    shown = value if isinstance(value, str) else f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
    return shown if len(shown) <= width else shown[:width - 3] + "..."


def figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tune(result: dict, stream: TextIO) -> None:
    """`cnncli tune`: a row per trial, then the chosen one and what was written."""
    console = _console(stream)
    rows = Table(show_edge=False, header_style="bold")
    for column in ("trial", "state", "val acc", "epochs", "time", *result["keys"], "note"):
        rows.add_column(column, justify="right" if column in ("trial", "val acc", "epochs", "time") else "left")
    best = result["best"]["trial"]
    for trial in result["trials"]:
        rows.add_row(str(trial["trial"]), trial["state"], figure(trial["val_accuracy"]), str(trial["epochs"]),
                     "-" if trial["seconds"] is None else f"{trial['seconds']:.1f}s",
                     *[Text(short(trial["values"].get(key))) for key in result["keys"]], Text(trial["note"]),
                     style="bold green" if trial["trial"] == best else None)
    console.print(rows)
    chosen = result["best"]
    console.print(Text(f"best      trial {best}: val accuracy {chosen['val_accuracy']:.4f}, test accuracy "
                       f"{chosen['test']['accuracy']:.4f} (n={chosen['test']['n']}, scored once, on this bundle)"))
    console.print(Text(f"bundle    {chosen['bundle']}"))
    console.print(Text(f"recipe    {chosen['recipe']}"))
    console.print(Text(f"study     {result['storage']} (continue it with --resume)"))


def compare(result: dict, stream: TextIO) -> None:
    """`cnncli compare`: a row per run, with the recipe keys that differ."""
    console = _console(stream)
    rows = Table(show_edge=False, header_style="bold")
    columns = compare_columns(result)
    for index, column in enumerate(columns):
        rows.add_column(column, justify="left" if index <= len(result["keys"]) else "right")
    for cells in compare_rows(result):
        rows.add_row(*[Text(cell) for cell in cells])
    console.print(rows)
    if not result["keys"]:
        console.print("the runs' recipes are the same")


def compare_columns(result: dict) -> list[str]:
    return ["run", *result["keys"], "val acc", "test acc", "test F1", "epochs", "time", "parameters", "weights"]


def compare_rows(result: dict) -> list[list[str]]:
    """The compare table's cells, as text: the same for the terminal and the page."""
    cells = []
    for run in result["runs"]:
        val, test = run["val"] or {}, run["test"] or {}
        partial = "" if run["status"] == "complete" else " (partial)"
        cells.append([run["run"] + partial, *[short(run["recipe"][key]) for key in result["keys"]],
                      figure(val.get("accuracy")), figure(test.get("accuracy")), figure(test.get("macro_f1")),
                      str(run["epochs"] if run["epochs"] is not None else "-"),
                      "-" if run["seconds"] is None else f"{run['seconds']:.1f}s", f"{run['parameters']:,}",
                      f"{run['bytes'] / 1024:,.0f} KB"])
    return cells


def curves_png(result: dict) -> bytes:
    """Validation accuracy and loss per epoch, every run on the same two axes (training loss
    dashed where a run has no validation)."""
    from matplotlib.ticker import MaxNLocator

    from cnncli.output.plots import figure_png, plt

    drawn, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    for run in result["runs"]:
        history = run["history"]
        epochs = list(range(1, len(history) + 1))
        if history and "val_accuracy" in history[0]:
            accuracy_axis.plot(epochs, [record["val_accuracy"] for record in history], marker="o", label=run["run"])
            loss_axis.plot(epochs, [record["val_loss"] for record in history], marker="o", label=run["run"])
        elif history:
            loss_axis.plot(epochs, [record["train_loss"] for record in history], linestyle="--", label=run["run"])
    for axis, title in ((accuracy_axis, "validation accuracy"), (loss_axis, "validation loss")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    return figure_png(drawn)


def embedded(png: bytes, alt: str) -> str:
    """An <img> with `png` inside it (cnncli.output.html.picture reads a file instead)."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{text(alt)}">'


def write_compare_page(result: dict, path: str | Path) -> None:
    """The comparison as one self-contained HTML page at `path`."""
    columns = compare_columns(result)
    numeric = range(len(result["keys"]) + 1, len(columns))
    differing = (", ".join(result["keys"]) if result["keys"] else "none: the recipes are the same")
    body = (section(1, "Runs", f'<p class="note">recipe keys that differ: {text(differing)}</p>'
                    + table(columns, compare_rows(result), numeric=list(numeric)))
            + section(2, "Curves", embedded(curves_png(result), "validation curves of every run")))
    header = f"<h1>{len(result['runs'])} runs side by side</h1>"
    write_file(path, document("cnncli compare", header, body).encode("utf-8"))
