"""Who runs a study's trials: this process, or parallel worker processes on this machine, each
asking the study for its next trial (cnncli.experiments.study.next_trial) until none is left."""

from __future__ import annotations

import multiprocessing

from cnncli.errors import CnncliError
from cnncli.experiments.study import Plan, find_study, next_trial
from cnncli.experiments.trial import run_trial
from cnncli.runtime.progress import Progress


def run_trials(plan: Plan, progress: Progress = Progress()) -> None:
    """Run trials of the study until it has them all (or time is up): one worker's loop."""
    study = find_study(plan)
    dimensions = plan.dimensions()
    while (trial := next_trial(study, plan)) is not None:
        run_trial(study, trial, plan, dimensions, progress)


def worker(plan: Plan, progress_type: type) -> None:
    """A parallel worker's process: its own torch threads, the same loop; ^C leaves its trial to --resume."""
    import torch

    from cnncli.output import warn

    if plan.threads:
        torch.set_num_threads(plan.threads)
    try:
        run_trials(plan, progress_type())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except CnncliError as error:
        warn(f"error: {error}")
        raise SystemExit(2) from None


def run_workers(plan: Plan, workers: int, progress_type: type = Progress) -> None:
    """`workers` processes running trials side by side (spawned: torch does not survive a fork)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(plan, progress_type), name=f"cnncli-tune-{index}")
                 for index in range(workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        raise CnncliError(f"tune: {len(failed)} of {workers} workers stopped on an error (status "
                          f"{', '.join(map(str, failed))}; see above); continue with --resume")
