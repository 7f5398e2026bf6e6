"""Human-readable tables for eval and inspect (rich, on stdout). JSON output bypasses this."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cnncli.errors import CnncliError


def _console() -> Console:
    """Rich's console, at least 120 columns wide when writing to a pipe or file."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=120)


def print_report(report: dict, console: Console | None = None) -> None:
    console = console or _console()
    console.print(f"[bold]{report['data']}[/bold]  n={report['n']}  accuracy [bold]{report['accuracy']:.4f}[/bold]"
                  f"  macro F1 {report['macro_f1']:.4f}")
    per_class = Table(show_edge=False, header_style="bold")
    for column in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for label, scores in report["per_class"].items():
        per_class.add_row(label, f"{scores['precision']:.3f}", f"{scores['recall']:.3f}", f"{scores['f1']:.3f}",
                          str(scores["support"]))
    console.print(per_class)
    labels = report["labels"]
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)", show_edge=False, header_style="bold")
    matrix.add_column("")
    for label in labels:
        matrix.add_column(label, justify="right")
    for label, row in zip(labels, report["confusion_matrix"]):
        matrix.add_row(label, *[f"[green]{n}[/green]" if i == labels.index(label) and n else (str(n) if n else "[dim]0[/dim]")
                                for i, n in enumerate(row)])
    console.print(matrix)


def describe_target(target: str, overrides: list[str], resolved: bool) -> dict:
    """The layer table of a bundle or a recipe (or the resolved recipe as YAML)."""
    from pathlib import Path

    from cnncli.bundle import MODEL_FILE, load_bundle
    from cnncli.inspection import layer_table

    if (Path(target) / MODEL_FILE).exists():
        if overrides:
            raise CnncliError("--set applies to recipes; a bundle's recipe is fixed")
        bundle = load_bundle(target)
        if resolved:
            return {"resolved_yaml": _yaml(bundle.info["recipe"])}
        table = layer_table(bundle.network, tuple(bundle.info["input_shape"]), bundle.modality.describe())
        info = bundle.info
        return {"target": target, "kind": "bundle", "labels": bundle.labels, "metrics": info.get("metrics", {}),
                "status": info.get("status"), "split": info.get("split"), **table}
    return describe_recipe(target, overrides, resolved)


def describe_recipe(target: str, overrides: list[str], resolved: bool) -> dict:
    from cnncli.config import config_to_dict, load_config
    from cnncli.data.split import load_splits
    from cnncli.inspection import layer_table
    from cnncli.modalities import modality_class
    from cnncli.model import build_network
    from cnncli.recipes import recipe_source

    source, _ = recipe_source(target)
    config = load_config(source, overrides)
    if resolved:
        return {"resolved_yaml": _yaml(config_to_dict(config))}
    modality_type = modality_class(config.data.modality)
    note = ""
    modality = modality_type.from_config(config)
    try:
        splits = load_splits(config, modality_type.extensions)
        labels = splits.labels
        modality.fit(splits.train)  # what is learned from data (a vocabulary) sizes the stem
    except CnncliError as error:
        labels = [str(i) for i in range(10)]
        note = f"data not readable ({error}); counted for 10 classes"
    network = build_network(config.model.blocks, modality.build_stem(), modality.input_shape, len(labels))
    table = layer_table(network, modality.input_shape, modality.describe())
    return {"target": target, "kind": "recipe", "classes": len(labels), "note": note, **table,
            "members": config.train.ensemble}


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


SHORT_TYPES = {"Conv2d": "conv", "BatchNorm2d": "bn", "BatchNorm1d": "bn", "ReLU": "relu", "Dropout": "drop",
               "Linear": "linear", "Flatten": "flatten", "ZeroPad2d": "pad", "MaxPool2d": "maxpool",
               "AvgPool2d": "avgpool", "AdaptiveMaxPool2d": "maxpool", "AdaptiveAvgPool2d": "avgpool",
               "Tanh": "tanh", "GELU": "gelu", "Sigmoid": "sigmoid"}


def print_layer_table(summary: dict, console: Console | None = None) -> None:
    console = console or _console()
    console.print(f"[bold]input[/bold] {summary['layers'][0]['detail']}")
    table = Table(show_edge=False, header_style="bold")
    for column in ("block", "layers", "detail", "output", "params", "connections", "RF"):
        table.add_column(column, justify="right" if column in ("params", "connections") else "left")
    for row in block_rows(summary["layers"][1:]):
        shape = "x".join(str(n) for n in row["output_shape"])
        parts = "+".join(SHORT_TYPES.get(part, part) for part in row["parts"])
        table.add_row(row["name"], parts, row["detail"], shape, f"{row['parameters']:,}",
                      f"{row['connections']:,}", row["receptive_field"])
    console.print(table)
    console.print(f"total parameters [bold]{summary['total_parameters']:,}[/bold]  "
                  f"(trainable {summary['trainable_parameters']:,})  "
                  f"connections {summary['total_connections']:,}")
    if summary.get("members", 1) > 1:
        console.print(f"an ensemble of {summary['members']} such networks, trained from different seeds; "
                      f"their class probabilities are averaged")
    if summary.get("note"):
        console.print(f"[yellow]note: {summary['note']}[/yellow]")
    if summary.get("kind") == "bundle" and summary.get("metrics"):
        parts = [f"{part} accuracy {m['accuracy']:.4f} (n={m['n']}{', out-of-fold' if m.get('out_of_fold') else ''})"
                 for part, m in summary["metrics"].items()]
        console.print("  ".join(parts))
    if "input" in summary:
        explained = summary["input"]
        tops = ", ".join(f"{t['label']} {t['score']:.3f}" for t in explained["top"])
        console.print(f"{explained['input']}: {tops}")
        for row in explained.get("explanation", [])[:40]:
            console.print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
        for path in explained["files"]:
            console.print(f"wrote {path}")


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
