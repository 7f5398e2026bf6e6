"""Two HTML pages, each one self-contained file (cnncli.output.html):

- the explainer (`inspect BUNDLE --input X --html FILE`): one input's way through the network,
  block by block as CNN Explainer shows it: the input as the network reads it, each block's
  output maps with their shapes, the classifier's probabilities, the Grad-CAM heat map, the
  first layer's filters and the layer table;
- the report (`eval --report DIR --html FILE`): metrics, per-class scores, confusion matrices,
  calibration, the most confident mistakes and training curves, then the walk through the
  network for the most confident mistake.
"""

from __future__ import annotations

from pathlib import Path

from cnncli.files.atomic import write_file
from cnncli.output import wrote
from cnncli.output.html import document, picture, section, table, text
from cnncli.output.tables import SHORT_TYPES, block_rows


def write_page(kind: str, result: dict, path: str | Path) -> None:
    """Write the `kind` page ("explainer" or "report") of a verb's result to `path`."""
    page = explainer_page(result) if kind == "explainer" else report_page(result)
    write_file(path, page.encode("utf-8"))


def write_page_and_list(kind: str, result: dict, files: list[str], path: str | Path | None) -> None:
    """The `kind` page of a result where --html names one (`path`), then every file written,
    named on stderr."""
    if path:
        write_page(kind, result, path)
    wrote(files + ([str(path)] if path else []))


def explainer_page(summary: dict) -> str:
    explained = summary["input"]
    top = explained["top"][0]
    header = (f"<h1>Inside {text(Path(summary['target']).name)}</h1>"
              f"<p>{text(explained['input'])}</p>"
              f'<p class="verdict">predicted <b>{text(top["label"])}</b> with probability {top["score"]:.3f}</p>')
    return document(f"cnncli: {explained['input']}", header, walkthrough(explained, summary))


def walkthrough(explained: dict, table_summary: dict, first_step: int = 1) -> str:
    """The sections that follow one input from the input to the label, and the layer table."""
    rows = {row["name"]: row for row in block_rows(table_summary["layers"][1:])}
    pictures = explained["pictures"]
    steps = [("The whole way at a glance", picture(pictures["overview"], "the input, the first maps of every block "
                                                                        "and the class probabilities")
              + '<p class="note">each column: the first maps of a block\'s output, each scaled to its own range; '
                "the steps below show every block in full</p>"),
             ("The input, as the network reads it", _card("input", explained["description"], None,
                                                          picture(pictures["input"], "the input"))),
             ("Layer by layer", _flow(explained["blocks"], rows)),
             ("The classifier's probabilities", _classifier(explained, rows)),
             ("Why this label: Grad-CAM", _gradcam(explained)),
             ("What the first layer looks for", picture(pictures["filters"], "first-layer filters")
              if "filters" in pictures else '<p class="note">no convolution</p>'),
             ("The layer table", _layer_table(table_summary))]
    return "".join(section(first_step + index, title, body) for index, (title, body) in enumerate(steps))


def _card(name: str, operations: str, shape, body: str) -> str:
    badge = f'<span class="shape">{text(" × ".join(map(str, shape)))}</span>' if shape else ""
    return (f'<div class="card"><h3><code>{text(name)}</code>{badge}</h3>'
            f'<p class="ops">{text(operations)}</p>{body}</div>')


def _block_card(block: dict, rows: dict) -> str:
    row = rows.get(block["name"])
    if row:
        parts = " + ".join(SHORT_TYPES.get(part, part) for part in row["parts"])
        operations = f"{parts}: {row['detail']}" if row["detail"] else parts
        operations += f"; {row['parameters']:,} parameters, receptive field {row['receptive_field']}"
    else:
        operations = "the branches' outputs stacked along the channels"
    return _card(block["name"], operations, block["shape"], picture(block["picture"], f"output of {block['name']}"))


def _flow(blocks: list[dict], rows: dict) -> str:
    """Cards top to bottom; the branches of a parallel block side by side."""
    parts, index = [], 0
    while index < len(blocks):
        name = blocks[index]["name"]
        if ".branch" in name:
            parallel = name.split(".branch")[0]
            branches: dict[str, list[str]] = {}
            while index < len(blocks) and blocks[index]["name"].startswith(parallel + ".branch"):
                branch = blocks[index]["name"][len(parallel) + 1:].split(".")[0]
                branches.setdefault(branch, []).append(_block_card(blocks[index], rows))
                index += 1
            arrow = '<div class="arrow">↓</div>'
            columns = "".join(f'<div class="branch"><div class="label">{text(branch)}</div>{arrow.join(cards)}</div>'
                              for branch, cards in branches.items())
            parts.append(f'<div class="branches">{columns}</div>')
            continue
        parts.append(_block_card(blocks[index], rows))
        index += 1
    return '<div class="flow">' + '<div class="arrow">↓</div>'.join(parts) + "</div>"


def _classifier(explained: dict, rows: dict) -> str:
    row = rows.get("classifier")
    operations = f"flatten + linear: {row['detail']}, {row['parameters']:,} parameters, then softmax" if row else ""
    ranked = sorted(explained["probabilities"].items(), key=lambda item: -item[1])[:10]
    note = (f'<p class="note">the average of the {explained["members"]} networks of the ensemble; '
            "the maps above are its first member's</p>" if explained.get("members", 1) > 1 else "")
    body = ('<div class="pair">' + picture(explained["pictures"]["probabilities"], "class probabilities")
            + table(["class", "probability"], [(label, f"{p:.4f}") for label, p in ranked], numeric=[1])
            + "</div>" + note)
    return _card("classifier", operations, [len(explained["probabilities"])], body)


def _gradcam(explained: dict) -> str:
    cam = explained["gradcam"]
    words = ""
    if explained.get("explanation"):
        tokens = [(row["token"], f"{row['saliency']:+.4f}") for row in explained["explanation"]]
        words = "<p>gradient × input saliency of each token:</p>" + table(["token", "saliency"], tokens, numeric=[1])
    return (f"<p>Where the evidence for <b>{text(cam['class'])}</b> lies: the activations of "
            f"<code>{text(', '.join(cam['layers']))}</code> weighted by how much each map raises the class's score "
            f"(Selvaraju et al., 2017), placed back on the input; {text(cam['members'])}.</p>"
            + picture(explained["pictures"]["gradcam"], "Grad-CAM heat map over the input") + words)


def _layer_table(summary: dict) -> str:
    rows = [(row["name"], row["type"], row["detail"], " × ".join(map(str, row["output_shape"])),
             f"{row['parameters']:,}", f"{row['connections']:,}", row["receptive_field"]) for row in summary["layers"]]
    totals = (f'<p class="note">{summary["total_parameters"]:,} parameters ({summary["trainable_parameters"]:,} '
              f"trainable), {summary['total_connections']:,} connections (counted as LeCun et al., 1998)</p>")
    return table(["layer", "type", "detail", "output", "parameters", "connections", "receptive field"], rows,
                 numeric=[4, 5]) + totals


def _temperature(metrics: dict) -> str:
    """What calibration did, where the bundle has a temperature (cnncli.nn.calibration)."""
    fitted = metrics.get("calibration") or {}
    if not fitted.get("fitted_on"):
        return ""
    return f" (scores divided by temperature {fitted['temperature']:g}; {fitted['ece_before']:.4f} before)"


def report_page(result: dict) -> str:
    metrics, calibration = result["metrics"], result["calibration"]
    folder = Path(result["report"])
    header = (f"<h1>Evaluation of {text(Path(metrics['bundle']).name)}</h1><p>{text(metrics['data'])}</p>"
              f'<p class="verdict">accuracy <b>{metrics["accuracy"]:.4f}</b> on {metrics["n"]} samples, '
              f"macro F1 {metrics['macro_f1']:.4f}, expected calibration error "
              f"{calibration['expected_calibration_error']:.4f}{_temperature(metrics)}</p>")
    per_class = table(["class", "precision", "recall", "F1", "support"],
                      [(label, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", s["support"])
                       for label, s in metrics["per_class"].items()], numeric=[1, 2, 3, 4])
    mistakes = table(["input", "true", "predicted", "confidence"],
                     [(m["input"], m["true"], m["predicted"], f"{m['confidence']:.3f}") for m in result["mistakes"]],
                     numeric=[3])
    sections = [
        ("Per class", f'<div class="pair">{per_class}{picture(folder / "per-class.png", "per-class scores")}</div>'),
        ("Confusion", '<div class="pair">' + picture(folder / "confusion.png", "confusion matrix, counts")
         + picture(folder / "confusion-normalised.png", "confusion matrix, rows normalised") + "</div>"),
        ("Calibration", "<p>Do the probabilities mean what they say? Samples binned by their top probability: "
         "a calibrated model's bars reach the diagonal.</p>" + picture(folder / "reliability.png", "reliability")),
        ("The most confident mistakes", (picture(folder / "mistakes.png", "mistakes") + mistakes)
         if result["mistakes"] else "<p>none: every sample was predicted right</p>"),
        ("Training", picture(folder / "curves.png", "training curves") if str(folder / "curves.png") in result["files"]
         else '<p class="note">the bundle has no training log</p>'),
    ]
    body = "".join(section(i + 1, title, content) for i, (title, content) in enumerate(sections))
    walk = result["walkthrough"]
    body += (f'<section><h2>Inside the network: {text(walk["why"])}</h2><p>{text(walk["input"])}: predicted '
             f'<b>{text(walk["top"][0]["label"])}</b> ({walk["top"][0]["score"]:.3f})</p></section>')
    body += walkthrough(walk, result["layers"], len(sections) + 1)
    return document(f"cnncli: evaluation of {metrics['bundle']}", header, body)
