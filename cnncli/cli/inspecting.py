"""The commands that look without training or predicting: `inspect` (a bundle, a recipe or data)
and `export`. cnncli.cli.app registers them on the one Typer app."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.exits import user_errors
from cnncli.cli.help import LAYER_HELP, RESULT_FORMAT_HELP, SET_HELP


@user_errors
def inspect(
    target: str = typer.Argument(..., help="A bundle folder, a recipe (.yaml), or data: a folder, "
                                               "or a file of sentences."),
    input_file: Optional[str] = typer.Option(None, "--input", help="Show what the network sees of this input."),
    out: Path = typer.Option(Path("inspect"), "--out", help="Folder for the pictures of --input or of the data."),
    html: Optional[Path] = typer.Option(None, "--html", help="With --input: also one self-contained HTML page "
                                                             "that walks through the network for that input."),
    layer: Optional[str] = typer.Option(None, "--layer", help="With --input: " + LAYER_HELP),
    data: bool = typer.Option(False, "--data", help="For a recipe or a bundle: look at its data (counts, sizes, "
                                                    "samples, warnings) instead of its network."),
    output_format: str = typer.Option("table", "--format", help=RESULT_FORMAT_HELP),
    resolved: bool = typer.Option(False, "--resolved", help="Print the fully resolved recipe (YAML) instead."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP + " (recipes and data folders only)"),
):
    """Look inside a bundle, a recipe or a data folder.

    Layers, shapes, parameters, connections and receptive fields.
    With --input: the input as the network sees it, its feature maps, Grad-CAM and the prediction.
    On a data folder (or a recipe with --data): the data before training.

    Examples:

      cnncli inspect recipes/lecture-1.yaml

      cnncli inspect runs/x --input digit.png --out inspect/ --html digit.html

      cnncli inspect photos/                       # class counts, sizes, samples, warnings

      cnncli inspect recipes/fsdd.yaml --data
    """
    from cnncli.cli.flag_checks import check_inspect_options
    from cnncli.files.atomic import check_outputs
    from cnncli.output import check_format, show
    from cnncli.verbs.inspection import describe_target, is_data

    check_format(output_format)
    check_inspect_options(input_file, html, layer, data)
    if (data or is_data(target)) and not resolved:
        return show_data(target, set_, out, output_format)
    if input_file:
        check_outputs((out, "--out", True), (html, "--html", False))
    summary = describe_target(target, set_, resolved)
    if resolved:
        return show("resolved", summary["resolved"], output_format)
    if input_file:
        from cnncli.bundle.io import load_bundle
        from cnncli.files.lock import writer_lock
        from cnncli.output.pages import write_page_and_list
        from cnncli.verbs.explain import explain_input

        with writer_lock(out, "--out"):  # one writer per folder (cnncli.files.lock)
            summary["input"] = explain_input(load_bundle(target), input_file, out, layer)
            write_page_and_list("explainer", summary, summary["input"]["files"], html)
    show("inspection", summary, output_format)


def show_data(target: str, overrides: List[str], out: Path, output_format: str) -> None:
    """inspect DATA (or RECIPE --data): the data view, its pictures in `out`."""
    from cnncli.files.atomic import check_outputs
    from cnncli.files.lock import writer_lock
    from cnncli.output import show, wrote
    from cnncli.runtime.progress import ConsoleProgress
    from cnncli.verbs.data_view import describe_data

    check_outputs((out, "--out", True))
    with writer_lock(out, "--out"):  # one writer per folder (cnncli.files.lock)
        summary = describe_data(target, overrides, out, ConsoleProgress())
    wrote(summary["files"])
    show("data", summary, output_format)


@user_errors
def export(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `cnncli train`."),
    export_format: str = typer.Option("onnx", "--format", help="onnx (the only one so far)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: BUNDLE.onnx beside the "
                                                                 "bundle folder); the preprocessing goes to FILE.json."),
):
    """Write a bundle's network as ONNX (needs the export extra).

    For servers without cnncli; beside it, FILE.json: the preprocessing a server must apply.
    Its graph reads a batch of any size of encoded inputs (pixels, a dB spectrogram, token ids).
    It returns class probabilities. Example:

      cnncli export runs/x --format onnx               # runs/x.onnx + runs/x.onnx.json
    """
    from cnncli.bundle.export import export_bundle
    from cnncli.output import show

    show("export", export_bundle(bundle, out, export_format), "table")
