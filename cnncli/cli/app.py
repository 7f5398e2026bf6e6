"""The command line: parse, call a library function, print. Nothing else lives here.

Heavy libraries (torch, torchaudio, librosa) are imported inside the commands, so that
`cnncli --help` answers at once.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.exits import Terminated, exit_now, fail, raise_terminated, user_errors
from cnncli.cli.experiments import compare, tune
from cnncli.cli.help import (
    ADAPT_HELP,
    CACHE_DIR_HELP,
    LAYER_HELP,
    NO_CACHE_HELP,
    RESULT_FORMAT_HELP,
    ROW_FORMAT_HELP,
    SET_HELP,
)
from cnncli.cli.inspecting import export, inspect
from cnncli.cli.serving import serve
from cnncli.errors import CnncliError
from cnncli.runtime.omp import choose_wait_policy

app = typer.Typer(
    help="Train, evaluate, run and explain convolutional networks on images, sound and text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def warn_if_partial(bundle) -> None:
    """eval and predict on a bundle whose training has not finished: say so, they still run."""
    from cnncli.output import warn

    if bundle.info.get("status") != "complete":
        warn(f"warning: {bundle.path} is a partial bundle (training stopped before its last epoch); continue "
             f"it with: cnncli train --resume {bundle.path}")


def run_cache(cache_dir: Optional[Path], no_cache: bool):
    """The cache folder this run may use (cnncli.files.cache): --cache-dir, CNNCLI_CACHE_DIR, the
    platform's; None with --no-cache."""
    from cnncli.files.cache import cache_folder

    return cache_folder(cache_dir, enabled=not no_cache)




@app.command()
@user_errors
def train(
    recipe: Optional[str] = typer.Argument(None, help="A recipe (.yaml), or a data folder to train on with "
                                                       "defaults. Not with --resume."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle folder [default: runs/<recipe name>]."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N (same as --set train.device=...)."),
    budget: Optional[str] = typer.Option(None, help="Time for the whole run: 90s, 20m, 1h30m (= train.budget)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_DIR_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help=NO_CACHE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the bundle already at --out."),
    output_format: str = typer.Option("table", "--format", help="Summary as " + RESULT_FORMAT_HELP),
    find_lr: bool = typer.Option(False, "--find-lr", help="Only run the learning-rate range test: print the "
                                                          "loss per rate, suggest one, plot to OUT/lr_find.png."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run whose partial "
                                                                 "bundle is here (same recipe and data)."),
):
    """Train a network from a recipe and write a model bundle.

    Examples:

      cnncli train recipes/quickstart.yaml

      cnncli train recipes/lecture-3.yaml --set data.root=DIR --set train.epochs=3 --out runs/x

      cnncli train --resume runs/x      # after a crash or ^C: continue from the last epoch

      torchrun --nproc-per-node 2 -m cnncli train recipes/lecture-3.yaml   # two processes (DDP)
    """
    from cnncli.bundle.io import read_resume_state
    from cnncli.output import check_format, show
    from cnncli.recipe.config import load_config
    from cnncli.recipe.defaults import recipe_source
    from cnncli.runtime.durations import process_start
    from cnncli.runtime.progress import ConsoleProgress
    from cnncli.training.train import train as run_training

    check_format(output_format)
    overrides = [*set_, *(f"train.{key}={value}" for key, value in (("device", device), ("budget", budget)) if value)]
    cache = run_cache(cache_dir, no_cache)
    if resume is not None:
        if recipe is not None or out is not None or find_lr:
            raise CnncliError("--resume BUNDLE: give no recipe, --out or --find-lr (the bundle has the recipe)")
        config, state = read_resume_state(resume, overrides)
        with resume_hint(resume):
            outcome = run_training(config, resume, ConsoleProgress(), state, cache=cache)
        return show("training", outcome.summary(), output_format) if outcome.rank == 0 else None
    if recipe is None:
        raise CnncliError("train: give a recipe or a data folder (or --resume BUNDLE)")
    source, name = recipe_source(recipe)
    config = load_config(source, overrides)
    out = out or Path("runs") / name
    if find_lr:
        from cnncli.training.lr_finder import lr_range_test

        return show("lr_range", lr_range_test(config, out, ConsoleProgress(), cache=cache), output_format)
    with resume_hint(out):
        outcome = run_training(config, out, ConsoleProgress(), cache=cache, overwrite=overwrite,
                               started=process_start())
    if outcome.rank == 0:  # under torchrun, only rank 0 prints
        show("training", outcome.summary(), output_format)


@contextlib.contextmanager
def resume_hint(out: Path):
    """On ^C after at least one epoch, say how to continue instead of starting over."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        from cnncli.bundle.resume_state import STATE_FILE

        if (Path(out) / STATE_FILE).exists():
            terminated = isinstance(interrupt, Terminated)
            fail(f"{'terminated' if terminated else 'interrupted'}; continue with: cnncli train --resume {out}",
                  143 if terminated else 130)
        raise


@app.command("eval")
@user_errors
def evaluate(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `cnncli train`."),
    data: List[str] = typer.Argument(None, help="Other data, read with the bundle's data rules "
                                                "[default: the recipe's test split]."),
    output_format: str = typer.Option("table", "--format", help=RESULT_FORMAT_HELP),
    plot: Optional[Path] = typer.Option(None, help="Also write the confusion matrix as a PNG here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a report to this folder: metrics.json, "
                                          "confusion, per class, confident mistakes, curves, calibration."),
    html: Optional[Path] = typer.Option(None, "--html", help="With --report: the report as one HTML file here."),
    layer: Optional[str] = typer.Option(None, "--layer", help="With --report: " + LAYER_HELP),
    batch_size: int = typer.Option(512, help="Inputs per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    adapt: bool = typer.Option(False, "--adapt", help=ADAPT_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_DIR_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help=NO_CACHE_HELP),
):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix.

    Of a bundle, on its recipe's test split or on other data read with the bundle's data rules.

    Examples:

      cnncli eval runs/x

      cnncli eval runs/fsdd new_speaker_recordings/ --format json

      cnncli eval runs/fsdd new_speaker_recordings/ --adapt

      cnncli eval runs/x --report runs/x/report --html runs/x/report.html
    """
    from cnncli.bundle.io import load_bundle
    from cnncli.cli.flag_checks import check_batch_size, check_report_options
    from cnncli.files.atomic import check_outputs
    from cnncli.files.lock import writer_lock
    from cnncli.output import check_format, show, warn
    from cnncli.runtime.device import pick_device
    from cnncli.runtime.progress import ConsoleProgress
    from cnncli.verbs.evaluate import run_evaluation

    check_format(output_format)
    check_batch_size(batch_size)
    check_report_options(report, html, layer)
    check_outputs((plot, "--plot", False), (report, "--report", True), (html, "--html", False))
    with writer_lock(report, "--report"):  # one writer per report folder (cnncli.files.lock)
        loaded = load_bundle(bundle)
        warn_if_partial(loaded)
        loaded.modality.use_cache(run_cache(cache_dir, no_cache))
        evaluation = run_evaluation(loaded, data or [], batch_size, pick_device(device), ConsoleProgress(), adapt)
        _write_evaluation(loaded, evaluation, plot, report, html, layer)
    for message in evaluation.report["skipped"][:10]:
        warn(f"skipped: {message}")
    for message in evaluation.report["notes"]:
        warn(f"note: {message}")
    show("evaluation", evaluation.report, output_format)


def _write_evaluation(loaded, evaluation, plot: Optional[Path], report: Optional[Path], html: Optional[Path],
                      layer: Optional[str]) -> None:
    """eval's files: the confusion matrix PNG (--plot), the report folder and its page (--report, --html)."""
    if plot:
        from cnncli.files.atomic import write_file
        from cnncli.output.plots import confusion_png

        write_file(plot, confusion_png(evaluation.report))
    if report:
        from cnncli.output.pages import write_page_and_list
        from cnncli.verbs.report import write_report

        written = write_report(loaded, evaluation, report, layer)
        write_page_and_list("report", written, written["files"], html)


@app.command()
@user_errors
def predict(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `cnncli train`."),
    inputs: List[str] = typer.Argument(None, help="Files, folders, globs; '-' reads from stdin "
                                                  "(paths, or sentences for a text bundle)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="A .csv/.tsv/.jsonl table with a path column "
                                           "(text bundles: or a text column); its columns come through to the rows."),
    lines: Optional[str] = typer.Option(None, "--lines", help="A file with one input per line ('-': stdin): "
                                        "a sentence for text bundles, else a path."),
    output_format: Optional[str] = typer.Option(None, "--format", help=ROW_FORMAT_HELP + " [default: table on a "
                                                "terminal, else CSV (or from --output's suffix)]"),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many labels to list per input."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write rows to this file (it appears "
                                         "only when complete)."),
    resume: bool = typer.Option(False, "--resume", help="With --output: append rows as they come, and after an "
                                "interruption skip the inputs the file already has."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Label 'unknown' when the top score "
                                              "(a calibrated probability) is below this."),
    window: Optional[float] = typer.Option(None, help="Audio: cut each recording into windows of this many seconds."),
    hop: Optional[float] = typer.Option(None, help="Audio: seconds between window starts [default: --window]."),
    segment: bool = typer.Option(False, "--segment", help="Audio: one row per sound found in each recording "
                                                          "(against its own noise floor), with start and end."),
    stream: Optional[str] = typer.Option(None, "--stream", help="Audio, with --segment: read one recording as it "
                                         "arrives ('-': stdin; WAV, or raw PCM with --raw), a row per sound at once."),
    raw: Optional[str] = typer.Option(None, help="With --stream: no header, ENCODING:RATE:CHANNELS (s16le:16000:1)."),
    latency: Optional[float] = typer.Option(None, help="With --segment: seconds from a sound's end to its row [1.0]."),
    batch_size: Optional[int] = typer.Option(None, help="Inputs per forward pass [default: 32 for audio, "
                                             "64 otherwise]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes that decode and predict "
                                          "[default: one per CPU; 0: none, all in this process]."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    adapt: bool = typer.Option(False, "--adapt", help=ADAPT_HELP + " Measured on the first 2,000 inputs."),
    escape_formulas: bool = typer.Option(False, "--escape-formulas", help="CSV to open in a spreadsheet: prefix "
                                         "cells that start with = + - @ (after spaces too), a tab or CR with '."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_DIR_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help=NO_CACHE_HELP),
):
    """One row per input, in input order.

    Unreadable inputs get a row with their error and make the exit status 1 once every other input is done.

    Examples:

      cnncli predict runs/x img1.png photos/ 'more/*.jpg' --format csv --top-k 3

      find data -name '*.wav' | cnncli predict runs/fsdd - -o predictions.jsonl --resume

      cnncli predict runs/x --manifest photos.csv -o labelled.csv --threshold 0.8

      cnncli predict runs/sst2 --lines reviews.txt | head -3

      cnncli predict runs/fsdd long.wav --window 1.0 --hop 0.5

      cnncli predict runs/fsdd phone-number.wav --segment --format csv

      arecord -f S16_LE -r 16000 -c 1 | cnncli predict runs/fsdd --segment --stream - --raw s16le:16000:1 --latency 0.5
    """
    # long because Typer declares each of predict's options in the signature; the work is elsewhere
    from cnncli.bundle.io import load_bundle
    from cnncli.cli.flag_checks import check_prediction_options
    from cnncli.output import row_format, warn
    from cnncli.verbs.predict import live_format, prediction_inputs

    form = live_format(output_format, output, resume) if stream else row_format(output_format, output)
    check_prediction_options(top_k, batch_size, window, hop, output)
    loaded = load_bundle(bundle)
    warn_if_partial(loaded)
    loaded.modality.use_cache(run_cache(cache_dir, no_cache))
    source = prediction_inputs(loaded, inputs or [], manifest, lines, stream)
    settings = dict(top_k=top_k, batch_size=batch_size, device=device, window=window, hop=hop, workers=workers,
                    threshold=threshold, segment=segment, adapt=adapt, latency=latency, stream=stream is not None,
                    raw=raw)
    errors, total = _stream_predictions(loaded, source, form, output, resume, settings, escape_formulas)
    if errors:
        warn(f"{errors} of {total} inputs could not be read (see the error column)")
        raise typer.Exit(1)


def _stream_predictions(loaded, source, form: str, output: Optional[str], resume: bool, settings: dict,
                        escape_formulas: bool = False) -> tuple[int, int]:
    """Stream the rows to stdout or --output (with --resume: after the rows it already has);
    returns (error rows, rows) over the whole output."""
    from contextlib import closing

    from cnncli.files.lock import writer_lock
    from cnncli.output import write_rows
    from cnncli.output.resume import Finished, finished_rows
    from cnncli.output.rows import Layout, open_output
    from cnncli.runtime.device import pick_device
    from cnncli.verbs.predict import CHUNK, predict_batches

    windows = settings["window"] is not None or settings["segment"]
    layout = Layout(source.columns, windows=windows, escape_formulas=escape_formulas)
    started = {"bundle": str(loaded.path), "bundle_digest": loaded.digest, **settings}  # what --resume records
    with writer_lock(output, "--output"):  # one writer per file (cnncli.files.lock)
        finished = finished_rows(output, form, layout, source.key, windows, CHUNK, started) if resume else Finished()
        layout.header = not finished.header
        batches = predict_batches(loaded, source, **{**settings, "device": pick_device(settings["device"])},
                                  done=finished.keys)
        with open_output(output, append=resume) as stream, closing(batches):
            counts = write_rows(batches, form, stream, layout)
    return counts["errors"] + finished.errors, counts["rows"] + len(finished.keys)


app.command()(inspect)  # cnncli.cli.inspecting
app.command()(export)
app.command("serve")(user_errors(serve))  # cnncli.cli.serving: its options alone would make this file too long
app.command()(tune)  # cnncli.cli.experiments
app.command()(compare)


def main() -> None:
    signal.signal(signal.SIGTERM, raise_terminated)
    # On a busy machine idle OpenMP threads sleep at once instead of spinning (cnncli.runtime.omp). Before torch loads.
    choose_wait_policy()
    try:
        app()
    except SystemExit as done:
        if done.code in (130, 143):
            exit_now(done.code)
        raise


if __name__ == "__main__":
    main()
