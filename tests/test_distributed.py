"""Several processes: `torchrun --nproc-per-node 2 -m cnncli train` with gloo on CPU trains the
same network as one process with the same global batch, only rank 0 writes, and a run killed
during training resumes under torchrun and ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from PIL import Image

from cnncli.bundle.io import load_bundle, read_info
from cnncli.recipe.config import load_config
from cnncli.runtime.distributed import Cluster
from cnncli.training.train import train

# Loaded by every process torchrun starts (through PYTHONPATH): Python's audit hooks report each
# file opened for writing, folder made and rename under the test's folder, per rank.
RECORD_WRITES = '''
import os, sys
_root, _rank = os.environ.get("RECORD_WRITES_UNDER"), os.environ.get("RANK")
if _root and _rank is not None:
    _log = open(os.path.join(os.environ["RECORD_WRITES_TO"], f"rank{_rank}-{os.getpid()}.txt"), "a")
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _record(event, args):
        if event == "open":
            if not args[2] & _writing:
                return
        elif event not in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            return
        if isinstance(args[0], (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(args[0])).startswith(_root):
            _log.write(f"{event} {os.fsdecode(args[0])}\\n")
            _log.flush()

    sys.addaudithook(_record)
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A recipe without dropout, augmentation or batch norm (two processes must then compute what
    one does), with many short epochs so that a run can be killed while it trains; the run of
    two processes the tests compare with."""
    root = tmp_path_factory.mktemp("ddp")
    generator = torch.Generator().manual_seed(0)
    for label, side in (("left", slice(0, 4)), ("right", slice(4, 8))):
        (root / "images" / label).mkdir(parents=True)
        for index in range(12):
            pixels = torch.randint(0, 60, (8, 8), generator=generator, dtype=torch.uint8)
            pixels[:, side] += 150
            Image.fromarray(pixels.numpy()).save(root / "images" / label / f"{index:02d}.png")
    (root / "r.yaml").write_text(
        "data: {root: images, image: {size: [8, 8]}, split: {val_fraction: 0.25, test_fraction: 0.2}}\n"
        "model: {blocks: [{conv: {channels: 4}}, {conv: {channels: 6}}, {pool: {size: global}}]}\n"
        "train: {epochs: 40, batch_size: 6, lr: 0.01, schedule: cosine, keep: best, threads: 1}\n")
    stdout = torchrun(root, root / "r.yaml", "--out", root / "runs" / "two")
    assert json.loads(stdout)["bundle"] == str(root / "runs" / "two")  # printed once, by rank 0
    return root


def torchrun(root: Path, *arguments, wait: bool = True):
    records = root / "writes"
    records.mkdir(exist_ok=True)
    hook = root / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(RECORD_WRITES)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO), os.environ.get("PYTHONPATH", "")]),
                   "RECORD_WRITES_UNDER": str(root / "runs"), "RECORD_WRITES_TO": str(records),
                   "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnncli",
               "train",
               *map(str, arguments), "--format", "json"]
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    if not wait:
        return process
    try:
        stdout, stderr = process.communicate(timeout=300)
    except BaseException:  # a timeout or an interrupt must not leave ranks waiting in gloo beside later tests
        kill_tree(process.pid, root)
        raise
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def weights(bundle: Path) -> dict[str, torch.Tensor]:
    return load_bundle(bundle).network.state_dict()


def written_by(root: Path, rank: int) -> list[str]:
    return [line for path in (root / "writes").glob(f"rank{rank}-*.txt") for line in path.read_text().splitlines()]


def test_two_processes_train_what_one_does_and_only_rank_0_writes(folder):
    one = train(load_config(folder / "r.yaml"), folder / "one")
    two = folder / "runs" / "two"
    for (name, ours), theirs in zip(weights(two).items(), weights(folder / "one").values()):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), name
    info = read_info(two)
    assert info["status"] == "complete" and info["training"]["world_size"] == 2
    assert [r["epoch"] for r in log_of(two)] == [r["epoch"] for r in one.history]
    assert info["metrics"]["test"]["accuracy"] == one.metrics["test"]["accuracy"]
    assert written_by(folder, 0) and not written_by(folder, 1)


def test_a_run_of_two_processes_killed_while_training_resumes_and_finishes(folder):
    """Streamed from the files this time, which trains what memory does, with a worker per rank."""
    cut = folder / "runs" / "cut"
    process = torchrun(folder, folder / "r.yaml", "--out", cut, "--set", "data.in_memory=false",
                       "--set", "data.workers=1", wait=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads((cut / "resume.json").read_text())["fit"]["epoch"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    kill_tree(process.pid, folder)  # both ranks and the launcher, as a power cut would
    process.wait()
    info = read_info(cut)
    assert info["status"] == "partial" and info["training"]["epochs_run"] < 40
    assert info["training"]["in_memory"] is False
    torchrun(folder, "--resume", cut)
    assert read_info(cut)["status"] == "complete"
    for (name, ours), theirs in zip(weights(cut).items(), weights(folder / "runs" / "two").values()):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=0), name
    assert [r["epoch"] for r in log_of(cut)] == list(range(1, 41))
    assert not written_by(folder, 1)


def kill_tree(pid: int, root: Path | None = None) -> None:
    """SIGKILL `pid` and everything it started, until /proc shows none of them left: one walk of
    /proc once missed a rank, which lived on (an orphan waiting in gloo) beside the resumed run.
    With `root`, also every process started for that test folder (torchrun's environment, which
    its ranks inherit): that finds a rank whose launcher is already gone."""
    doomed: set[int] = set()
    for _ in range(50):
        found = set(descendants(pid)) | {pid} | (started_for(root) if root else set())
        alive = {p for p in found | doomed if Path(f"/proc/{p}").exists() and not _zombie(p)}
        if not alive:
            return
        doomed |= alive
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"processes of {pid} still alive: {sorted(alive)}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def started_for(root: Path) -> set[int]:
    """The processes whose environment names `root`'s write records (see torchrun)."""
    marker = f"RECORD_WRITES_TO={root / 'writes'}".encode() + b"\0"
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes():
                found.add(int(environ.parent.name))
        except OSError:
            continue
    return found - {os.getpid()}


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], list(children.get(pid, []))
    while stack:
        found.append(stack.pop())
        stack.extend(children.get(found[-1], []))
    return found


def log_of(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "log.jsonl").read_text().splitlines()]


def test_each_rank_takes_a_contiguous_share_of_every_global_batch():
    batch = torch.arange(7)
    shares = [Cluster(rank=rank, world_size=3).share(batch) for rank in range(3)]
    assert torch.equal(torch.cat(shares), batch) and [len(share) for share in shares] == [3, 2, 2]
    assert Cluster().share(batch) is batch
