"""The fuzzing figures of docs/RELIABILITY.md: test_fuzz.py's strategies, and two of this pass's
(tampered weights, --resume reruns), drawn from a fresh seed and counted instead of asserted.

    OMP_NUM_THREADS=1 python tests/fuzz_census.py --seed 2026 --scale 2

Each example ends as one of: clean (what the promise says), traceback (anything but a row with
an error or one line with exit status 2 escaped), hang (over --limit seconds), wrong (it ran,
but broke the promise: a row that does not name its input, a refusal in several lines, a tampered
bundle that still answered, a refused --resume that changed the file). pytest runs test_fuzz.py
derandomized; this is the same fuzzing with another seed, every outcome kept.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from io import StringIO
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]  # this checkout's cnncli

import test_fuzz  # noqa: E402
from conftest import REPO, tiny_image_recipe, write_two_class_images  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncli.bundle.io import load_bundle  # noqa: E402
from cnncli.cli.app import app  # noqa: E402
from cnncli.errors import CnncliError  # noqa: E402
from cnncli.output.rows import write_predictions  # noqa: E402
from cnncli.verbs.predict import predict  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"
OUTCOMES = ("clean", "traceback", "hang", "wrong")
tally: dict[str, Counter] = defaultdict(Counter)
notes: dict[str, list[str]] = defaultdict(list)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def judged(category: str, limit: float, run) -> str:
    """Run one example; count and return its outcome. `run` returns True (clean) or a reason it is wrong."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        verdict = run()
        outcome = "clean" if verdict is True else "wrong"
        if verdict is not True:
            notes[category].append(str(verdict)[:300])
    except Hang:
        outcome = "hang"
    except Exception as error:  # the census counts what escapes; test_fuzz.py fails on it
        outcome = "traceback"
        notes[category].append(f"{type(error).__name__}: {str(error)[:300]}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    tally[category][outcome] += 1
    return outcome


def cli(*args):
    return test_fuzz.runner.invoke(app, [str(a) for a in args])


def refused_in_one_line(result) -> bool:
    """Exit 2 with one line, or a ran command's exit 0 or 1; never an escaped exception."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code == 2:
        return result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.exit_code in (0, 1)


def drawn(count: int, chosen_seed: int):
    return lambda test: seed(chosen_seed)(settings(max_examples=count, database=None, deadline=None,
                                                   derandomize=False, suppress_health_check=list(HealthCheck))(test))


# -- hostile files through predict ----------------------------------------------------------------

def row_verdict(bundle, sample, row) -> bool | str:
    if row.error is not None:
        named = sample.locator in row.error or sample.locator.rsplit(":", 1)[0] in row.error
        one = "\n" not in row.error.replace(sample.locator, "")
        return True if named and one and row.label is None else f"error row {row.error!r}"
    if row.label in bundle.labels and 0 <= row.score <= 1 and math.isfinite(row.score):
        return True
    return f"row {row.label!r} {row.score!r}"


def files(count: int, chosen_seed: int, limit: float) -> None:
    bundles = {kind: load_bundle(FIXTURES / kind) for kind in ("image", "audio", "text")}

    @drawn(count, chosen_seed)
    @given(batch=st.lists(test_fuzz.hostile_file(), min_size=12, max_size=16))
    def one_batch(batch):
        folder = Path(tempfile.mkdtemp(prefix="cnncli-census-"))
        try:
            routed: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for index, (suffix, content) in enumerate(batch):
                (folder / f"{index:02d}{suffix}").write_bytes(content)
                routed[test_fuzz.ROUTE[suffix]].append((str(folder / f"{index:02d}{suffix}"), suffix))
            for kind, named in routed.items():
                judge_rows(bundles[kind], [path for path, _ in named], [suffix for _, suffix in named], limit)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    one_batch()


def judge_rows(bundle, paths: list[str], suffixes: list[str], limit: float) -> None:
    """One predict call; each file counted under its suffix."""
    rows, started = [], time.monotonic()

    def run():
        rows.extend(predict(bundle, paths, top_k=2, batch_size=64))
        for form in ("table", "csv", "jsonl"):
            write_predictions(iter([rows]), form, StringIO())
        return True

    outcome = judged("_calls", limit, run)
    samples = list(bundle.modality.expand_inputs(paths))
    for index, suffix in enumerate(suffixes):
        if outcome != "clean" or len(rows) != len(samples):
            tally[suffix][outcome if outcome != "clean" else "wrong"] += 1
            continue
        verdict = row_verdict(bundle, samples[index], rows[index])
        tally[suffix]["clean" if verdict is True else "wrong"] += 1
        if verdict is not True:
            notes[suffix].append(verdict)
    tally["_seconds"]["files"] += round(time.monotonic() - started)


# -- recipes and model.json documents --------------------------------------------------------------

def recipes(count: int, chosen_seed: int, limit: float) -> None:
    base = json.loads(json.dumps(__import__("yaml").safe_load((REPO / "recipes" / "quickstart.yaml").read_text())))
    folder = Path(tempfile.mkdtemp(prefix="cnncli-census-"))
    path = folder / "recipe.yaml"

    @drawn(count, chosen_seed)
    @given(recipe=test_fuzz.mutated(base), as_text=st.booleans(), garbage=st.binary(max_size=64))
    def one(recipe, as_text, garbage):
        text = json.dumps(recipe) if isinstance(recipe, dict) and not as_text else repr(recipe)
        path.write_bytes(text.encode("utf-8", "surrogatepass") + (garbage if as_text else b""))

        def run():
            result = cli("train", path, "--set", "data.root=/nonexistent/cnncli-fuzz", "--out", folder / "out")
            if not refused_in_one_line(result) or result.exit_code != 2 or (folder / "out").exists():
                return f"exit {result.exit_code}: {result.output[-200:]}"
            data_root = "/nonexistent/cnncli-fuzz: " in result.stderr  # the data, not the recipe
            tally["_recipe refusals"]["name the recipe" if str(path) in result.stderr or data_root else "do not"] += 1
            if not (str(path) in result.stderr or data_root):
                notes["_recipe refusals"].append(result.stderr.strip()[:200])
            return True

        judged("recipes", limit, run)

    try:
        one()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def documents(count: int, chosen_seed: int, limit: float, kind: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="cnncli-census-")) / "bundle"
    shutil.copytree(FIXTURES / kind, folder)
    info = json.loads((folder / "model.json").read_text())
    argument = {"text": "a fine film", "image": str(sorted((REPO / "sample_data").rglob("*.png"))[0]),
                "audio": str(sorted((REPO / "sample_data").rglob("*.wav"))[0])}[kind]

    @drawn(count, chosen_seed)
    @given(document=test_fuzz.mutated(info), raw=st.one_of(st.none(), st.binary(max_size=200)))
    def one(document, raw):
        content = raw if raw is not None else json.dumps(document).encode("utf-8", "surrogatepass")
        (folder / "model.json").write_bytes(content)

        def run():
            result = cli("predict", folder, argument, "--format", "jsonl", "--workers", 0)
            if not refused_in_one_line(result):
                return f"exit {result.exit_code}: {result.output[-200:]}"
            try:
                load_bundle(folder)
            except CnncliError:
                pass
            return True

        judged(f"model.json documents ({kind})", limit, run)

    try:
        one()
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


# -- this pass: tampered weights, --resume reruns -------------------------------------------------

def trained_bundle(folder: Path) -> Path:
    """A bundle of this cnncli (its model.json records the weights' digest), trained in seconds."""
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    images = write_two_class_images(folder / "images")
    return train(load_config(tiny_image_recipe(images)), folder / "bundle", cache=None).bundle


def weights(count: int, chosen_seed: int, limit: float) -> None:
    """Bytes of a bundle's weights overwritten, cut or added: refused in one line naming the
    bundle, unless the bytes are unchanged (then the same answer as before)."""
    folder = Path(tempfile.mkdtemp(prefix="cnncli-census-"))
    bundle = trained_bundle(folder)
    original = (bundle / "weights.safetensors").read_bytes()
    image = folder / "images" / "left" / "00.png"
    expected = cli("predict", bundle, image, "--format", "jsonl", "--workers", 0).stdout

    tensors = 8 + int.from_bytes(original[:8], "little")  # where the tensors' bytes start, after the header

    @drawn(count, chosen_seed)
    @given(where=st.sampled_from(["tensors", "tensors", "tensors", "anywhere", "cut", "added"]),
           changes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
                            max_size=64),
           cut=st.integers(0, len(original) - 1), extra=st.binary(min_size=1, max_size=16))
    def one(where, changes, cut, extra):
        content, start = bytearray(original), tensors if where == "tensors" else 0
        for share, value in changes:
            content[start + int(share * (len(original) - start))] = value
        content = bytes(content[:cut] if where == "cut" else content) + (extra if where == "added" else b"")
        (bundle / "weights.safetensors").write_bytes(content)

        def run():
            result = cli("predict", bundle, image, "--format", "jsonl", "--workers", 0)
            refused_in_one_line(result)
            if content == original:
                return True if result.exit_code == 0 and result.stdout == expected else "unchanged, other answer"
            if result.exit_code == 2 and str(bundle) in result.stderr and result.stderr.count("\n") == 1:
                return True
            return f"tampered weights answered: exit {result.exit_code} {result.stdout[:120]!r}"

        judged("tampered weights", limit, run)

    try:
        one()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


OPTIONS = {"top_k": ("--top-k", [1, 2, 3]), "threshold": ("--threshold", [None, 0.5, 0.9]),
           "escape": ("--escape-formulas", [False, True]), "bundle": (None, ["text", "other"])}


def resumes(count: int, chosen_seed: int, limit: float) -> None:
    """A --resume file started with some options, resumed with others: refused in one line naming
    a differing option (the file unchanged), or, with the same ones, finished."""
    folder = Path(tempfile.mkdtemp(prefix="cnncli-census-"))
    other = folder / "other"
    shutil.copytree(FIXTURES / "text", other)
    info = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**info, "labels": info["labels"][::-1]}))
    bundles = {"text": FIXTURES / "text", "other": other}
    choice = st.fixed_dictionaries({key: st.sampled_from(values) for key, (_, values) in OPTIONS.items()})

    def arguments(options: dict, output: Path, count: int) -> list:
        flags = [bundles[options["bundle"]], *(f"a sentence {i}" for i in range(count)),
                 "-o", output, "--resume", "--top-k", options["top_k"], "--workers", 0]
        flags += ["--threshold", options["threshold"]] if options["threshold"] is not None else []
        return flags + (["--escape-formulas"] if options["escape"] else [])

    @drawn(count, chosen_seed)
    @given(first=choice, second=choice, form=st.sampled_from([".csv", ".jsonl"]))
    def one(first, second, form):
        output = folder / f"rows{form}"
        for stale in (output, output.with_name(output.name + ".resume.json")):
            stale.unlink(missing_ok=True)

        def run():
            started = cli("predict", *arguments(first, output, 5))
            if started.exit_code != 0:
                return f"start: exit {started.exit_code} {started.output[-200:]}"
            before = output.read_bytes()
            again = cli("predict", *arguments(second, output, 8))
            refused_in_one_line(again)
            if first == second:
                return True if again.exit_code == 0 and len(output.read_bytes().splitlines()) > \
                    len(before.splitlines()) else f"same options: exit {again.exit_code}"
            flags = [flag or "bundle" for key, (flag, _) in OPTIONS.items() if first[key] != second[key]]
            if again.exit_code == 2 and output.read_bytes() == before and any(f in again.stderr for f in flags):
                return True
            return f"resumed with other options: exit {again.exit_code} {again.stderr[-200:]!r}"

        judged("--resume reruns", limit, run)

    try:
        one()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table() -> str:
    lines = ["| Category | Tried | Clean | Traceback | Hang | Wrong |", "| --- | --- | --- | --- | --- | --- |"]
    for category, counts in tally.items():
        if not category.startswith("_"):
            lines.append(f"| {category} | {sum(counts.values()):,} | " + " | ".join(
                f"{counts[outcome]:,}" for outcome in OUTCOMES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="1: as many examples as test_fuzz.py's default run")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before an example counts as a hang")
    parser.add_argument("--only", nargs="*", help="these steps alone (files, recipes, documents, weights, resumes)")
    options = parser.parse_args()
    print(f"cnncli from {Path(sys.modules['cnncli'].__file__).parent}", file=sys.stderr)
    scale, chosen, limit = options.scale, options.seed, options.limit
    steps = [("files", lambda: files(round(160 * scale), chosen, limit)),
             ("recipes", lambda: recipes(round(300 * scale), chosen, limit)),
             *[(f"documents ({kind})", lambda kind=kind: documents(round(100 * scale), chosen, limit, kind))
               for kind in ("text", "image", "audio")],
             ("weights", lambda: weights(round(100 * scale), chosen, limit)),
             ("resumes", lambda: resumes(round(40 * scale), chosen, limit))]
    for name, step in steps:
        if options.only and name.split()[0] not in options.only:
            continue
        started = time.monotonic()
        step()
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(table())
    print(f"\nrecipe refusals: {dict(tally['_recipe refusals'])}; predict calls: {dict(tally['_calls'])}")
    for category, found in notes.items():
        for note in dict.fromkeys(found):
            print(f"- {category}: {note}")


if __name__ == "__main__":
    main()
