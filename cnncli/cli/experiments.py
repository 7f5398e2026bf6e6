"""The experiment commands, `tune` and `compare`: parse, call, print, as in cnncli.cli.app, which
registers them on the same Typer app. Heavy libraries are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.exits import Terminated, fail, user_errors
from cnncli.errors import CnncliError
from cnncli.output.formats import format_help

SET_HELP = "Override a recipe key, e.g. --set train.epochs=3 or --set 'tune.train.lr={log: [1e-4, 1e-2]}'."


@user_errors
def tune(
    recipe: Optional[str] = typer.Argument(None, help="A recipe (.yaml) with a tune: section, or a data folder "
                                                       "(its modality's search space). Not needed with --resume."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Trials to finish, all sessions and workers "
                                         "together (default: 20, or what the study in --out started with)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Start no trial after this long, e.g. 2h, 90m, "
                                                                "1h30m (default: no limit)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study folder: the study database, trials/, "
                                       "best/, best.yaml, trials.csv (default: runs/<recipe name>-tune)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out (after a crash or ^C: the "
                                "trial cut short runs again, then the same trials follow). With --storage, only "
                                "while no other machine runs its trials: a running trial counts as cut short."),
    workers: int = typer.Option(1, "--workers", help="Trials at a time, each in its own process."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="Stop trials whose validation curve falls behind: "
                                         "median (the default), halving (successive halving) or none."),
    storage: Optional[str] = typer.Option(None, "--storage", help="A database URL machines share the study "
                                          "through, e.g. postgresql://host/db: those that run the same command "
                                          "(the same --out name) share its trials (default: SQLite in --out)."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    output_format: str = typer.Option("table", "--format", help="Result as " + format_help()),
):
    """Search a recipe's settings on validation (needs the tune extra).

    Optuna's TPE with pruning; the best trial's bundle is scored once on test.

    Examples:

      cnncli tune recipes/fsdd.yaml --trials 20 --budget 2h --out runs/fsdd-tune

      cnncli tune --resume --out runs/fsdd-tune        # after a crash or ^C

      cnncli tune photos/ --trials 12 --workers 2      # the general space, two trials at a time
    """
    from cnncli.experiments.tune import tune as run_tune
    from cnncli.output import check_format, show, wrote
    from cnncli.recipe.defaults import recipe_source
    from cnncli.runtime.progress import ConsoleProgress

    check_format(output_format)
    if out is None:
        if recipe is None:
            raise CnncliError("--resume: give the study's folder with --out")
        out = Path("runs") / f"{recipe_source(recipe)[1]}-tune"
    try:
        result = run_tune(recipe, list(set_), out, trials, budget, resume, workers, pruner, storage,
                          ConsoleProgress())
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        fail(f"{'terminated' if terminated else 'interrupted'}; continue with: cnncli tune --resume --out {out}",
             143 if terminated else 130)
    wrote(result["files"])
    show("tune", result, output_format)


@user_errors
def compare(
    runs: List[str] = typer.Argument(..., help="Bundles, or folders of bundles (runs/, a study's trials/)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also one HTML page: the table and every run's "
                                                             "validation curves on the same axes."),
    output_format: str = typer.Option("table", "--format", help=format_help()),
):
    """Put runs side by side: what differs, and how they scored.

    The recipe keys that differ, validation and test metrics, epochs, time and size.

    Examples:

      cnncli compare runs/fsdd runs/fsdd-tune/best

      cnncli compare runs/fsdd-tune/trials --html trials.html
    """
    from cnncli.experiments.compare import compare_runs
    from cnncli.files.atomic import check_outputs
    from cnncli.output import check_format, show, wrote

    check_format(output_format)
    check_outputs((html, "--html", False))
    result = compare_runs(runs)
    if html:
        from cnncli.output.experiments import write_compare_page

        write_compare_page(result, html)
        wrote([str(html)])
    show("compare", result, output_format)
