"""Tables for people (rich): one renderer per kind of result, the `table` format's results.

Every value that comes from data (a label, a path, a sentence) goes in as rich Text, never as
markup, so `[bold]` in a sentence is printed as typed and `[/x]` cannot break the table. Control
characters in it (ESC, BEL, ...) are shown as escapes (`\\x1b[2J`), every string of a result at
once (`shown_all`), so a file name or a sentence cannot clear the screen, move the cursor or retitle
the terminal.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnncli.output import experiments

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: what a terminal may act on


def shown(text: str) -> str:
    """`text` with each control character written as an escape: ESC as `\\x1b`."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def shown_all(value: Any) -> Any:
    """Every string of a result (keys too, so lookups agree), `shown`."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown_all(key): shown_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shown_all(item) for item in value)
    return value


def _console(stream: TextIO) -> Console:
    """Rich's console, at least 120 columns wide when writing to a pipe or file."""
    return Console(file=stream) if stream.isatty() else Console(file=stream, width=120)


def training(summary: dict, stream: TextIO) -> None:
    console = _console(stream)
    console.print(Text(f"bundle    {summary['bundle']}"))
    for part, metrics in summary["metrics"].items():
        scored = ", out-of-fold" if metrics.get("out_of_fold") else ""
        console.print(f"{part:<9} accuracy {metrics['accuracy']:.4f} (n={metrics['n']}{scored})")
    for part, metrics in summary["metrics"].items():
        if metrics.get("members"):
            alone = metrics["members"]
            console.print(f"{part:<9} one network: mean {sum(alone) / len(alone):.4f} "
                          f"(the {len(alone)} members alone: {min(alone):.4f}-{max(alone):.4f})")
    kept = summary["training"]
    if kept.get("members", 1) > 1:
        console.print(f"members   {kept['members']} (probabilities averaged)")
    calibration = summary.get("calibration") or {}
    if calibration.get("fitted_on"):
        console.print(f"calibration temperature {calibration['temperature']:g} on {calibration['fitted_on']}: "
                      f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}")
    if kept.get("auto") and kept["auto"].get("chosen"):
        auto = kept["auto"]
        scores = ", ".join(f"{c['name']} {c['val_accuracy']:.4f}" for c in auto.get("candidates", []))
        console.print(Text(f"auto      chose {auto['chosen']} on validation" + (f" ({scores})" if scores else "")))
    for path, encoding in kept.get("encodings", {}).items():
        console.print(Text(f"encoding  {encoding} (detected) {path}"))
    if kept.get("skipped_lines"):
        skipped = kept["skipped_lines"]
        console.print(Text(f"skipped   {skipped['count']} line(s) with a label and no text: "
                           + ", ".join(skipped["lines"][:5]) + (", ..." if skipped["count"] > 5 else "")))
    console.print(Text(f"epochs    {kept['epochs_run']} (kept: {kept['kept']}, epoch {kept['kept_epoch']})  "
                       f"time {kept['total_seconds']:.1f}s on {kept['device']}"))


def lr_range(result: dict, stream: TextIO) -> None:
    console = _console(stream)
    for rate, loss in zip(result["lr"][::5], result["loss"][::5]):
        console.print(f"lr {rate:.2e}  loss {loss:.4f}")
    suggestion = result["suggestion"]
    console.print(Text(f"suggested lr {suggestion:.2e} (steepest descent; plot: {result['plot']})"
                       if suggestion else "too few steps before the loss diverged to suggest a rate"))


def evaluation(report: dict, stream: TextIO) -> None:
    console = _console(stream)
    heading = Text.assemble((report["data"], "bold"), f"  n={report['n']}  accuracy ",
                            (f"{report['accuracy']:.4f}", "bold"), f"  macro F1 {report['macro_f1']:.4f}")
    console.print(heading)
    calibration = report.get("calibration")
    if calibration:
        fitted = (f"temperature {calibration['temperature']:g}, fitted on {calibration['fitted_on']}"
                  if calibration.get("fitted_on") else "no temperature in this bundle")
        console.print(f"expected calibration error {calibration['ece_before']:.4f} before, "
                      f"{calibration['ece_after']:.4f} after calibration ({fitted})")
    per_class = Table(show_edge=False, header_style="bold")
    for column in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for label, scores in report["per_class"].items():
        per_class.add_row(Text(label), f"{scores['precision']:.3f}", f"{scores['recall']:.3f}",
                          f"{scores['f1']:.3f}", str(scores["support"]))
    console.print(per_class)
    labels = report["labels"]
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)", show_edge=False, header_style="bold")
    matrix.add_column("")
    for label in labels:
        matrix.add_column(Text(label), justify="right")
    for true, row in enumerate(report["confusion_matrix"]):
        cells = [Text(str(n), style="green" if true == guess and n else ("" if n else "dim"))
                 for guess, n in enumerate(row)]
        matrix.add_row(Text(labels[true]), *cells)
    console.print(matrix)


SHORT_TYPES = {"Conv2d": "conv", "FullWidthConv2d": "conv", "BatchNorm2d": "bn", "BatchNorm1d": "bn", "ReLU": "relu", "Dropout": "drop",
               "Linear": "linear", "Flatten": "flatten", "ZeroPad2d": "pad", "MaxPool2d": "maxpool",
               "AvgPool2d": "avgpool", "AdaptiveMaxPool2d": "maxpool", "AdaptiveAvgPool2d": "avgpool",
               "Tanh": "tanh", "GELU": "gelu", "Sigmoid": "sigmoid"}


def block_rows(layers: list[dict]) -> list[dict]:
    """Leaf rows merged per block (conv1 = pad + conv + bn + act + dropout), for a compact table."""
    blocks: list[dict] = []
    for row in layers:
        block = row["name"].rsplit(".", 1)[0] if "." in row["name"] else row["name"]
        if not blocks or blocks[-1]["name"] != block:
            blocks.append({"name": block, "parts": [], "detail": "", "output_shape": row["output_shape"],
                           "parameters": 0, "connections": 0, "receptive_field": row["receptive_field"]})
        merged = blocks[-1]
        merged["parts"].append(row["type"])
        if row["detail"] and row["type"] not in ("ZeroPad2d", "BatchNorm1d", "BatchNorm2d"):
            merged["detail"] = f"{merged['detail']}, {row['detail']}" if merged["detail"] else row["detail"]
        merged["output_shape"], merged["receptive_field"] = row["output_shape"], row["receptive_field"]
        merged["parameters"] += row["parameters"]
        merged["connections"] += row["connections"]
    return blocks


def inspection(summary: dict, stream: TextIO) -> None:
    console = _console(stream)
    console.print(Text.assemble(("input", "bold"), " ", summary["layers"][0]["detail"]))
    table = Table(show_edge=False, header_style="bold")
    for column in ("block", "layers", "detail", "output", "params", "connections", "RF"):
        table.add_column(column, justify="right" if column in ("params", "connections") else "left")
    for row in block_rows(summary["layers"][1:]):
        shape = "x".join(str(n) for n in row["output_shape"])
        parts = "+".join(SHORT_TYPES.get(part, part) for part in row["parts"])
        table.add_row(row["name"], parts, row["detail"], shape, f"{row['parameters']:,}",
                      f"{row['connections']:,}", row["receptive_field"])
    console.print(table)
    console.print(Text.assemble("total parameters ", (f"{summary['total_parameters']:,}", "bold"),
                                f"  (trainable {summary['trainable_parameters']:,})  "
                                f"connections {summary['total_connections']:,}"))
    if summary.get("members", 1) > 1:
        console.print(f"an ensemble of {summary['members']} such networks, trained from different seeds; "
                      f"their class probabilities are averaged")
    if summary.get("note"):
        console.print(Text(f"note: {summary['note']}", style="yellow"))
    if summary.get("kind") == "bundle" and summary.get("metrics"):
        parts = [f"{part} accuracy {m['accuracy']:.4f} (n={m['n']}{', out-of-fold' if m.get('out_of_fold') else ''})"
                 for part, m in summary["metrics"].items()]
        console.print("  ".join(parts))
    calibration = summary.get("calibration") or {}
    if calibration.get("fitted_on"):
        console.print(f"scores calibrated: temperature {calibration['temperature']:g} fitted on "
                      f"{calibration['fitted_on']} (ECE {calibration['ece_before']:.4f} -> "
                      f"{calibration['ece_after']:.4f})")
    if "input" in summary:
        _explained_input(summary["input"], console)


def _explained_input(explained: dict, console: Console) -> None:
    tops = ", ".join(f"{t['label']} {t['score']:.3f}" for t in explained["top"])
    console.print(Text(f"{explained['input']}: {tops}"))
    cam = explained["gradcam"]
    console.print(Text(f"Grad-CAM for {cam['class']} at {', '.join(cam['layers'])} ({cam['members']}): "
                       f"hottest at row {cam['peak'][0]}, column {cam['peak'][1]} of the input"))
    if "maps_from" in explained:
        console.print(Text(f"block outputs drawn for {explained['maps_from']}"))
    for row in explained.get("explanation", [])[:40]:
        console.print(Text("  " + "  ".join(f"{k}={v}" for k, v in row.items())))


def export(result: dict, stream: TextIO) -> None:
    console = _console(stream)
    shape = " x ".join(str(n) for n in result["input"]["shape"])
    console.print(Text(f"wrote     {result['onnx']}"))
    console.print(Text(f"          {result['sidecar']} (the preprocessing a server applies)"))
    console.print(Text(f"input     {result['input']['name']}: {result['input']['dtype']} {shape}"))
    console.print(f"output    probabilities: batch x {result['labels']}")
    gap = result["max_difference"]
    console.print("checked   " + (f"onnxruntime agrees with cnncli within {gap:.1e}" if gap is not None
                                 else "not checked (onnxruntime is not installed)"))


def data(summary: dict, stream: TextIO) -> None:
    """`inspect DATA`: counts per class and part, the measures, and the warnings."""
    console = _console(stream)
    console.print(Text.assemble((summary["target"], "bold"), f"  {summary['description']}"))
    split = summary["split"]
    console.print(Text(f"test: {split['test_rule']}; val: {split['val_rule']}"))
    parts = list(split["counts"])
    numeric = [key for key, value in summary["measures"].items() if "median" in value]
    table = Table(show_edge=False, header_style="bold")
    for column in ["class", *parts, *[f"median {key}" for key in numeric]]:
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, row in summary["classes"].items():
        table.add_row(Text(label), *[str(row[part]) for part in parts],
                      *[f"{row['median'].get(key, '-')}" for key in numeric])
    table.add_row(Text("all", style="bold"), *[str(split["counts"][part]) for part in parts], *[""] * len(numeric))
    console.print(table)
    for key, value in summary["measures"].items():
        if "median" in value:
            text = f"min {value['min']}  median {value['median']}  mean {value['mean']}  max {value['max']}"
        else:
            text = ", ".join(f"{name} ({count})" for name, count in value["values"].items())
            text += f"  ({value['distinct']} distinct)" if value["distinct"] > len(value["values"]) else ""
        console.print(Text(f"{key:<12} {text}"))
    for note in summary["notes"]:
        if not note.startswith("warning: "):  # those are among the warnings
            console.print(Text(f"note: {note}"))
    for line in summary["warnings"]:
        console.print(Text(f"warning: {line}", style="yellow"))
    if not summary["warnings"]:
        console.print(Text("no warnings: every sample readable, classes balanced, no duplicates, no test overlap",
                           style="green"))


TABLES = {"training": training, "lr_range": lr_range, "evaluation": evaluation, "inspection": inspection,
          "data": data, "export": export, "tune": experiments.tune, "compare": experiments.compare}


def write_table(kind: str, result: dict, stream: TextIO) -> None:
    """The `table` format's result writer: the renderer for this kind of result."""
    TABLES[kind](shown_all(result), stream)
