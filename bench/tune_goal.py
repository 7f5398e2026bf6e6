"""`cnncli tune` against the shipped recipe, in the same wall-clock time (issue 31's goal).

Runs, side by side as a user would (fresh processes, each on one thread so that neither takes the
other's core): `cnncli train RECIPE` once per seed (the shipped recipe as it is, seeds 0, 1, ...),
one after another; and, at the same time, `cnncli tune RECIPE --trials N`. It prints each
shipped run's validation and test accuracy and the time the runs took together; then the study's
time, its trials (finished, pruned, failed), the settings it chose on validation and that
bundle's test accuracy, scored once by tune. The goal holds when the study ends within the
shipped runs' time and its test accuracy is at least their mean.

    python bench/tune_goal.py recipes/mr.yaml --out /tmp/mr-goal
    python bench/tune_goal.py recipes/fsdd.yaml --set 'data.split.group_regex=_([a-z]+)_' --out /tmp/fsdd-goal

--set applies to both sides (for example, whole voices as validation groups). --budget gives the
study a limit of its own (default: none, its time is reported beside the runs').
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cnncli"]


def metrics(bundle: Path) -> dict:
    with open(bundle / "model.json", encoding="utf-8") as file:
        info = json.load(file)["metrics"]
    return {part: info[part]["accuracy"] for part in ("val", "test") if part in info}


def shipped_runs(recipe: str, sets: list[str], runs: int, out: Path) -> tuple[list[dict], float]:
    """The recipe as shipped, once per seed, one after another: their metrics and total seconds."""
    started, results = time.perf_counter(), []
    for seed in range(runs):
        bundle = out / f"shipped-seed{seed}"
        command = [*CLI, "train", recipe, *sets, "--set", f"train.seed={seed}", "--out", str(bundle)]
        with open(out / f"shipped-seed{seed}.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        results.append({"seed": seed, **metrics(bundle)})
        print(f"shipped seed {seed}: {results[-1]}  ({time.perf_counter() - started:.0f}s so far)", flush=True)
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], dest="sets", help="a recipe override, both sides")
    parser.add_argument("--runs", type=int, default=5, help="shipped runs (seeds 0, 1, ...)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pruner", help="tune's --pruner (default: tune's own, median)")
    parser.add_argument("--budget", help="the study's own limit (default: none)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = [item for value in [*args.sets, "train.threads=1"] for item in ("--set", value)]
    tune_command = [*CLI, "tune", args.recipe, *sets, "--trials", str(args.trials), "--out", str(args.out / "study"),
                    "--format", "json"] + (["--pruner", args.pruner] if args.pruner else [])
    if args.budget:
        tune_command += ["--budget", args.budget]
    started, ended = time.perf_counter(), []
    with open(args.out / "tune.json", "w") as answer, open(args.out / "tune.log", "w") as log:
        study = subprocess.Popen(tune_command, stdout=answer, stderr=log, cwd=REPO)

        def study_ends() -> None:
            study.wait()
            ended.append(time.perf_counter())

        waiting = threading.Thread(target=study_ends)
        waiting.start()
        shipped, shipped_seconds = shipped_runs(args.recipe, sets, args.runs, args.out)
        waiting.join()
    tune_seconds = ended[0] - started
    if study.returncode != 0:
        sys.exit(f"tune failed ({study.returncode}): see {args.out / 'tune.log'}")
    result = json.loads((args.out / "tune.json").read_text())
    states = [row["state"] for row in result["trials"]]
    tests = [run["test"] for run in shipped]
    summary = {
        "recipe": args.recipe, "sets": args.sets, "shipped": shipped, "shipped_seconds": round(shipped_seconds),
        "shipped_test_mean": round(statistics.mean(tests), 4),
        "shipped_test_sd": round(statistics.stdev(tests), 4) if len(tests) > 1 else 0.0,
        "tune_seconds": round(tune_seconds), "trials": {state: states.count(state) for state in sorted(set(states))},
        "chosen": {key: result["best"].get(key) for key in ("trial", "values", "val_accuracy")},
        "chosen_test": result["best"]["test"].get("accuracy"),
    }
    summary["goal_met"] = (summary["tune_seconds"] <= summary["shipped_seconds"]
                           and summary["chosen_test"] >= summary["shipped_test_mean"])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
