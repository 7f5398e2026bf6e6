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

A goal run can outlast a working session (FSDD's: about three hours on two cores), so it can be
stopped (^C, or SIGTERM to its process group: kill -TERM -- -PGID) and continued by running the
same command again:
shipped runs that finished are kept with the seconds they took, a cut run continues with `train
--resume`, and the study with `tune --resume`. Each side's time is the sum of its sessions'
wall-clock, written every few seconds to progress.json; the work a stop throws away (the study's
cut trial runs again from its start, a run from its last epoch) counts against that side.
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

HEARTBEAT = 2  # seconds between writes of the study's elapsed time: a stop loses at most this

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cnncli"]


def metrics(bundle: Path) -> dict:
    with open(bundle / "model.json", encoding="utf-8") as file:
        info = json.load(file)["metrics"]
    return {part: info[part]["accuracy"] for part in ("val", "test") if part in info}


def load_progress(out: Path) -> dict:
    path = out / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {"shipped": [], "study_seconds": 0.0}


def save_progress(out: Path, progress: dict) -> None:
    temporary = out / "progress.json.tmp"
    temporary.write_text(json.dumps(progress, indent=1))
    temporary.replace(out / "progress.json")


def shipped_runs(recipe: str, sets: list[str], runs: int, out: Path, progress: dict, lock: threading.Lock) -> None:
    """The recipe as shipped, once per seed, one after another; each finished run's metrics and
    seconds go to `progress` (runs finished in an earlier session are skipped). A run cut by a
    stop continues with `cnncli train --resume`, its seconds so far kept in progress['partial']."""
    for seed in range(len(progress["shipped"]), runs):
        bundle = out / f"shipped-seed{seed}"
        partial = progress.get("partial") or {}
        before = partial["seconds"] if partial.get("seed") == seed else 0.0
        if before and (bundle / "model.json").exists() and not (bundle / "resume.json").exists():
            seconds = before  # it finished as the stop came
        else:
            command = ([*CLI, "train", "--resume", str(bundle)] if before and (bundle / "resume.json").exists() else
                       [*CLI, "train", recipe, *sets, "--set", f"train.seed={seed}", "--out", str(bundle), "--overwrite"])
            seconds = timed_run(command, out / f"shipped-seed{seed}.log", before, lambda elapsed: record(
                out, progress, lock, partial={"seed": seed, "seconds": elapsed}))
        record(out, progress, lock, partial=None, finished={"seed": seed, **metrics(bundle), "seconds": seconds})
        print(f"shipped seed {seed}: {progress['shipped'][-1]}", flush=True)


def timed_run(command: list[str], log: Path, before: float, tick) -> float:
    """Run `command` (output appended to `log`) until it ends (timed); a failure ends the bench."""
    with open(log, "a") as output:
        run = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
        seconds = timed(run, before, tick)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command[3:5])} failed ({run.returncode}): see {log}; run the same command to continue")
    return seconds


def timed(process: subprocess.Popen, before: float, tick) -> float:
    """Wait for `process`, calling tick(its seconds so far, counting `before`) every HEARTBEAT;
    its seconds in all, counting `before`."""
    started = time.perf_counter()
    while process.poll() is None:
        time.sleep(HEARTBEAT)
        tick(before + time.perf_counter() - started)
    return before + time.perf_counter() - started


def record(out: Path, progress: dict, lock: threading.Lock, partial: dict | None, finished: dict | None = None) -> None:
    with lock:
        if finished is not None:
            progress["shipped"].append(finished)
        if partial is None:
            progress.pop("partial", None)
        else:
            progress["partial"] = partial
        save_progress(out, progress)


def run_study(command: list[str], out: Path, progress: dict, lock: threading.Lock) -> int:
    """Run (or continue) the study, adding its wall-clock to progress['study_seconds'] as it goes."""
    if progress.get("study_done"):
        return 0
    def count(seconds: float, done: bool = False) -> None:
        with lock:
            progress["study_seconds"], progress["study_done"] = seconds, done
            save_progress(out, progress)

    resume = ["--resume"] if (out / "study").is_dir() else []
    with open(out / "tune.json", "w") as answer, open(out / "tune.log", "a") as log:
        study = subprocess.Popen(command + resume, stdout=answer, stderr=log, cwd=REPO)
        count(timed(study, progress["study_seconds"], count), done=study.returncode == 0)
    return study.returncode


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
    progress, lock, returncode = load_progress(args.out), threading.Lock(), []
    study = threading.Thread(target=lambda: returncode.append(run_study(tune_command, args.out, progress, lock)))
    study.start()
    shipped_runs(args.recipe, sets, args.runs, args.out, progress, lock)
    study.join()
    if returncode[0] != 0:
        sys.exit(f"tune failed ({returncode[0]}): see {args.out / 'tune.log'}; run the same command to continue")
    result = json.loads((args.out / "tune.json").read_text())
    states = [row["state"] for row in result["trials"]]
    tests = [run["test"] for run in progress["shipped"]]
    summary = {
        "recipe": args.recipe, "sets": args.sets, "shipped": progress["shipped"],
        "shipped_seconds": round(sum(run["seconds"] for run in progress["shipped"])),
        "shipped_test_mean": round(statistics.mean(tests), 4),
        "shipped_test_sd": round(statistics.stdev(tests), 4) if len(tests) > 1 else 0.0,
        "tune_seconds": round(progress["study_seconds"]),
        "trials": {state: states.count(state) for state in sorted(set(states))},
        "chosen": {key: result["best"].get(key) for key in ("trial", "values", "val_accuracy")},
        "chosen_test": result["best"]["test"].get("accuracy"),
    }
    summary["goal_met"] = (summary["tune_seconds"] <= summary["shipped_seconds"]
                           and summary["chosen_test"] >= summary["shipped_test_mean"])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
