"""GPU benchmark: lecture-3 and FSDD on one GPU, cnncli in fp32, bf16 and fp16 beside the plain
PyTorch reference loop (bench/reference/, fp32) on the same GPU.

Each run is a subprocess with its own time limit, and the whole benchmark keeps to --budget
seconds (runs that no longer fit are recorded as skipped), so one hang cannot eat a short lease
on a GPU machine. Samples/s: cnncli's from each bundle's log.jsonl (over the whole fit, and the
last epoch alone, which leaves out the first epoch's warm-up), the reference's as it prints them;
test accuracy of the model each keeps. The JSON file is rewritten after every run.

    python bench/gpu.py --data .gpudata --json runs/gpu.json
    python bench/gpu.py --data .gpudata --device cpu --smoke     # the whole script, a few steps per run

--data is a folder with fashion-mnist/ (the four idx .gz files) and fsdd/recordings/ (the .wav
files); bench/gpu_run.sh prepares and runs it on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from accuracy import display, git, run_cnncli, run_json, run_reference

LECTURE_STEPS_PER_EPOCH = 600  # 60,000 images in batches of 100
FSDD_STEPS_PER_EPOCH = 64  # 2,025 training recordings (2,500 less the test 250 and validation 225) in batches of 32
SMOKE_STEPS = 5
RUN_TIMEOUT = 120  # seconds; on an H100 a run takes well under a minute


@dataclass
class Run:
    data: str  # "lecture-3" or "fsdd"
    tool: str  # "cnncli" or "reference"
    precision: str  # the reference always trains in fp32

    @property
    def name(self) -> str:
        return f"{self.data} {self.tool} {self.precision}"


# In order of importance: when time runs short, the last ones are skipped.
RUNS = [
    Run("lecture-3", "cnncli", "fp32"), Run("lecture-3", "reference", "fp32"),
    Run("lecture-3", "cnncli", "bf16"),
    Run("fsdd", "cnncli", "fp32"), Run("fsdd", "reference", "fp32"), Run("fsdd", "cnncli", "bf16"),
    Run("lecture-3", "cnncli", "fp16"), Run("fsdd", "cnncli", "fp16"),
]


def command(run: Run, args: argparse.Namespace, out: Path) -> list[str]:
    data = Path(args.data).resolve()
    steps = SMOKE_STEPS if args.smoke else None
    if run.tool == "reference" and run.data == "lecture-3":
        return [sys.executable, "bench/reference/lecture.py", "--config", "3", "--data", "fashion",
                "--root", str(data / "fashion-mnist"), "--steps", str(steps or args.epochs * LECTURE_STEPS_PER_EPOCH),
                "--seed", "0", "--threads", str(args.threads), "--device", args.device]
    if run.tool == "reference":
        return [sys.executable, "bench/reference/fsdd.py", "--folder", str(data / "fsdd" / "recordings"),
                "--seed", "0", "--threads", str(args.threads), "--device", args.device,
                "--steps", str(steps or args.fsdd_epochs * FSDD_STEPS_PER_EPOCH)]
    sets = [f"train.precision={run.precision}", "train.seed=0", f"train.threads={args.threads}"]
    if run.data == "lecture-3":
        recipe, flags = "recipes/lecture-3.yaml", []
        sets += [f"data.root={data / 'fashion-mnist'}", f"train.epochs={args.epochs}"]
    else:  # features computed in every run, as the reference does
        recipe, flags = "recipes/fsdd.yaml", ["--no-cache"]
        sets += [f"data.root={data / 'fsdd' / 'recordings'}", f"train.epochs={args.fsdd_epochs}"]
    if steps:
        sets.append(f"train.steps={steps}")
    return [sys.executable, "-m", "cnncli", "train", recipe, "--device", args.device, *(f"--set={s}" for s in sets),
            *flags, "--format", "json", "--out", str(out)]


def measure(run: Run, args: argparse.Namespace, timeout: float) -> dict:
    """One run: its figures, or its error."""
    with tempfile.TemporaryDirectory(prefix="cnncli-gpu-") as folder:
        out = Path(folder) / "bundle"
        argv = command(run, args, out)
        record = {"name": run.name, "data": run.data, "tool": run.tool, "precision": run.precision,
                  "command": display(argv, out)}
        try:
            if run.tool == "cnncli":
                figures = run_cnncli(argv, out, timeout)
                trained = json.loads((out / "model.json").read_text())["training"]
                figures.update(device=trained["device"], trained_precision=trained["precision"])
            else:
                figures = run_reference(argv, timeout)
        except (RuntimeError, OSError, ValueError, KeyError) as error:
            return {**record, "error": str(error)}
    keep = ("accuracy", "images_per_second", "last_epoch_images_per_second", "steps", "fit_seconds",
            "wall_seconds", "device", "trained_precision", "threads", "torch")
    return {**record, **{key: figures[key] for key in keep if key in figures}}


def table(records: list[dict]) -> str:
    lines = ["| data | run | precision | steps | samples/s (fit) | samples/s (last epoch) | vs reference "
             "| vs own fp32 | test accuracy | fit s | wall s |", "|" + " --- |" * 11]
    by_name = {record["name"]: record for record in records}
    for record in records:
        if "error" in record or "skipped" in record:
            why = record.get("skipped") or record["error"].splitlines()[0][:150]
            lines.append(f"| {record['data']} | {record['tool']} | {record['precision']} | {why} |" + " |" * 7)
            continue
        speed = record["images_per_second"]
        reference = by_name.get(f"{record['data']} reference fp32", {}).get("images_per_second")
        own_fp32 = by_name.get(f"{record['data']} {record['tool']} fp32", {}).get("images_per_second")
        lines.append("| " + " | ".join([
            record["data"], record["tool"], record["precision"], str(record.get("steps", "-")), f"{speed:.0f}",
            number(record.get("last_epoch_images_per_second")),
            f"{speed / reference:.2f}x" if reference and record["tool"] == "cnncli" else "-",
            f"{speed / own_fp32:.2f}x" if own_fp32 and record["precision"] != "fp32" else "-",
            f"{record['accuracy']:.4f}", number(record.get("fit_seconds"), 1), number(record.get("wall_seconds"), 1),
        ]) + " |")
    return "\n".join(lines)


def number(value: float | None, decimals: int = 0) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def provenance(args: argparse.Namespace) -> dict:
    """What the figures were measured on (asked in a child process, so this one holds no GPU memory)."""
    probe = ("import json, torch; cuda = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
             "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
             "'gpu': torch.cuda.get_device_name(0) if cuda else None, 'cuda_available': cuda}))")
    facts, _ = run_json([sys.executable, "-c", probe], timeout=120)
    if args.device.startswith("cuda") and not facts["cuda_available"]:
        raise SystemExit(f"--device {args.device}: torch {facts['torch']} sees no CUDA device here")
    return {**facts, "commit": git("rev-parse", "--short", "HEAD"), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": args.device,
            "threads": args.threads, "lecture_epochs": args.epochs, "smoke": args.smoke}


def save(path: Path | None, facts: dict, records: list[dict]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"provenance": facts, "runs": records, "table": table(records)}, indent=1))
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with fashion-mnist/ and fsdd/recordings/")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=2, help="lecture-3's epochs")
    parser.add_argument("--fsdd-epochs", type=int, default=5, help="FSDD's epochs (the recipe trains 60; a speed "
                                                                     "check needs fewer)")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads of every run, cnncli and reference alike")
    parser.add_argument("--budget", type=float, default=330, help="seconds for all the runs together")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_STEPS} training steps per run (checks the script)")
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after every run)")
    args = parser.parse_args()
    for part in ("fashion-mnist/train-images-idx3-ubyte.gz", "fsdd/recordings"):
        if not (args.data / part).exists():
            raise SystemExit(f"--data {args.data}: no {part} in it")

    started = time.perf_counter()
    facts = provenance(args)
    print(json.dumps(facts), flush=True)
    records: list[dict] = []
    for run in RUNS:
        left = args.budget - (time.perf_counter() - started)
        if left < 30:
            records.append({"name": run.name, "data": run.data, "tool": run.tool, "precision": run.precision,
                            "skipped": f"skipped: {args.budget:.0f} s budget spent"})
        else:
            print(f"[{time.perf_counter() - started:5.0f} s] {run.name} ...", flush=True)
            records.append(measure(run, args, min(RUN_TIMEOUT, left)))
            record = records[-1]
            print(f"[{time.perf_counter() - started:5.0f} s] {run.name}: " + (record.get("error") or (
                f"{record['images_per_second']:.0f} samples/s, accuracy {record['accuracy']:.4f}, "
                f"wall {record['wall_seconds']:.0f} s")), flush=True)
        save(args.json, facts, records)
    print(table(records))
    for record in records:
        if "command" in record:
            print(f"- {record['name']}: `{record['command']}`")


if __name__ == "__main__":
    main()
