"""What `cnncli tune` leaves in its folder, besides the study and the trials' bundles:

    best/         the chosen trial's bundle, with its test metrics: ready for eval, predict, export
    best.yaml     its fully resolved recipe, a file to commit and train again with `cnncli train`
    trials.csv    one row per trial: state, validation accuracy, epochs, time, settings, bundle

The trial is chosen on validation alone (the best accuracy; the earlier trial on a tie), and
the test split is scored here, once, on the chosen bundle: no trial ever saw it. When the trials
trained one network of an ensemble recipe (study.Plan.members), best/ is the chosen settings
trained as the recipe says, all its networks (the trial's own taken as the first where it is
that network: cnncli.experiments.reuse), and scored on test as `cnncli train` scores.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import yaml

from cnncli.errors import CnncliError
from cnncli.experiments.study import Plan, trial_rows
from cnncli.files.atomic import staged_folder, write_file
from cnncli.files.jsontext import dumps
from cnncli.runtime.progress import Progress

BEST_FOLDER = "best"
BEST_RECIPE = "best.yaml"
TRIALS_TABLE = "trials.csv"
NOT_METRICS = ("bundle", "data", "skipped", "notes", "calibration", "adapted_on")  # eval's report, beyond the scores


def study_result(study, plan: Plan, progress: Progress = Progress()) -> dict:
    """Choose the best trial, score it on test, write best/, best.yaml and trials.csv; what tune prints."""
    out = Path(plan.out)
    rows = trial_rows(study)
    completed = [row for row in rows if row["state"] == "complete"]
    if not completed:
        raise CnncliError(f"tune: no trial of {out} finished ({len(rows)} ran; see their lines above)")
    best = max(completed, key=lambda row: (row["val_accuracy"], -row["trial"]))
    if not (out / best["bundle"]).is_dir():  # a study shared through --storage: it ran elsewhere
        raise CnncliError(f"tune: the best trial, {best['trial']} (val accuracy {best['val_accuracy']:.4f}), ran on "
                          f"{best['host']}: its bundle is {best['bundle']} in the study's --out there; run the same "
                          "command there to score it on test")
    if plan.members > 1:
        test = trained_as_recipe(plan, best, out / BEST_FOLDER, progress)
        judged = f"one of its {plan.members} networks"
    else:
        test = best_bundle(out / best["bundle"], out / BEST_FOLDER, progress)
        judged = "its network"
    recipe = read_recipe(out / BEST_FOLDER)
    recipe.pop("tune", None)
    header = (f"# chosen by cnncli tune: trial {best['trial']} of {len(rows)}, val accuracy {best['val_accuracy']:.4f}"
              f" ({judged}; test {test['accuracy']:.4f}); train it again with: cnncli train {BEST_RECIPE}\n")
    write_file(out / BEST_RECIPE, (header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)).encode())
    keys = list(plan.space)
    write_file(out / TRIALS_TABLE, trials_csv(rows, keys).encode())
    return {"study": str(out), "storage": plan.storage, "keys": keys, "trials": rows,
            "best": {**best, "test": test, "bundle": str(out / BEST_FOLDER), "recipe": str(out / BEST_RECIPE),
                     "trial_bundle": str(out / best["bundle"])},
            "files": [str(out / BEST_FOLDER), str(out / BEST_RECIPE), str(out / TRIALS_TABLE)]}


def read_recipe(bundle: Path) -> dict:
    from cnncli.bundle.io import read_info

    return read_info(bundle)["recipe"]


def trained_as_recipe(plan: Plan, best: dict, target: Path, progress: Progress) -> dict:
    """Train the chosen trial's settings with every network the recipe asks for into `target`,
    scored on test as `cnncli train` scores; returns the test metrics."""
    from cnncli.experiments.reuse import trial_as_first_member
    from cnncli.experiments.space import trial_recipe
    from cnncli.training.train import train

    config = trial_recipe(plan.recipe, best["values"], f"trial {best['trial']}")
    first, why_not = trial_as_first_member(Path(plan.out) / best["bundle"], config)
    detail = "the trial's network is the first" if first else f"all trained here: {why_not}"
    progress.note(f"trial {best['trial']} chosen on one network: training its settings as the recipe says "
                  f"({plan.members} networks; {detail}) into {target}")
    metrics = train(config, target, progress, resume=first, overwrite=True).metrics
    if "test" not in metrics:
        raise CnncliError(f"{target}: its recipe has no test split to score the chosen settings on")
    return metrics["test"]


def best_bundle(chosen: Path, target: Path, progress: Progress) -> dict:
    """Copy the chosen trial's bundle to `target` with its test metrics (scored here, once) and
    test confusion matrix added, as `cnncli train` would have written them; returns the metrics."""
    from cnncli.bundle.io import MODEL_FILE, load_bundle, read_info
    from cnncli.output.plots import confusion_png
    from cnncli.runtime.device import pick_device
    from cnncli.verbs.evaluate import run_evaluation

    bundle = load_bundle(chosen)
    settings = bundle.config.train
    report = run_evaluation(bundle, [], settings.eval_batch_size, pick_device(settings.device), progress).report
    test = {key: value for key, value in report.items() if key not in NOT_METRICS}
    info = read_info(chosen)
    info["metrics"]["test"] = test
    with staged_folder(target) as staging:
        for item in chosen.iterdir():
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        (staging / MODEL_FILE).write_text(dumps(info, str(target / MODEL_FILE), indent=2) + "\n", encoding="utf-8")
        (staging / "confusion.png").write_bytes(confusion_png(test))
    return test


def trials_csv(rows: list[dict], keys: list[str]) -> str:
    """The table of trials, one column per searched key (a list or section as JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", "val_accuracy", "epochs", "seconds", *keys, "bundle", "note"])
    for row in rows:
        settings = [row["values"].get(key) for key in keys]
        writer.writerow([row["trial"], row["state"], row["val_accuracy"], row["epochs"], row["seconds"],
                         *[value if isinstance(value, (str, int, float)) else dumps(value, key)
                           for key, value in zip(keys, settings)], row["bundle"], row["note"]])
    return buffer.getvalue()
