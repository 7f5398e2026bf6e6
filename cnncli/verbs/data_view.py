"""`cnncli inspect DATA_FOLDER` and `inspect RECIPE --data`: a look at the data before training.

The data are read and split as `cnncli train` would (a folder gets the default recipe), then:
how many samples each class has in each part, what each modality measures of its samples
(Modality.measure: image sizes, recording durations, sentence lengths), a grid of samples per
class drawn by the modality, histograms of the measures, and warnings about what would spoil a
training run or its test figure: unreadable files, lines skipped while reading (as train
reports them), class imbalance, a class absent from the test part, duplicate samples (by a hash
of their content), and test samples that are also in the training data.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from cnncli.bundle.io import MODEL_FILE, read_info
from cnncli.data.sample import Sample
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.modalities import modality_class
from cnncli.recipe.config import config_from_dict, load_config
from cnncli.recipe.defaults import recipe_source
from cnncli.runtime.progress import Progress

IMBALANCE_RATIO = 2.0  # warn when the largest class has this many times the smallest's training samples
GRID_PER_CLASS = 6  # samples drawn per class
GRID_CLASSES = 20  # classes drawn at most (the first, in label order)
EXAMPLES = 3  # examples named in a warning


def describe_data(target: str, overrides: Sequence[str] = (), out_dir: Path = Path("inspect"),
                  progress: Progress = Progress()) -> dict:
    """The data view of a data folder, or of the data a recipe or a bundle reads; writes
    samples.png and measures.png to `out_dir`."""
    if (Path(target) / MODEL_FILE).exists():
        if overrides:
            raise CnncliError("--set applies to recipes; a bundle's recipe is fixed")
        config = config_from_dict(read_info(target)["recipe"], origin=str(Path(target) / MODEL_FILE))
    else:
        config = load_config(recipe_source(target)[0], list(overrides))
    modality_type = modality_class(config.data.modality)
    modality = modality_type.from_config(config)
    splits = load_splits(config, modality_type)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    everything = [(part, sample) for part, samples in parts.items() for sample in samples]
    facts, unreadable = measure_samples(modality, [sample for _, sample in everything], progress)
    digests = {id(sample): content_digest(sample) for _, sample in everything}
    result = {"target": target, "modality": modality.name, "description": modality.describe(),
              "split": splits.record, "labels": splits.labels,
              "classes": class_table(parts, splits.labels, facts),
              "measures": summarise([fact for fact in facts.values()]),
              "unreadable": unreadable,
              "duplicates": duplicate_groups(everything, digests),
              "overlap": test_overlap(parts, digests),
              "notes": splits.notes}  # what reading found, as train prints it (encodings, skipped lines)
    result["warnings"] = warnings(result, parts)
    result["files"] = draw_data(modality, splits.labels, parts["train"], facts, Path(out_dir))
    return result


def measure_samples(modality, samples: Sequence[Sample], progress: Progress) -> tuple[dict[int, dict], list[str]]:
    """({id(sample): its measures}, [errors of the samples that could not be read])."""
    facts, unreadable = {}, []
    with progress.task(f"reading {len(samples)} samples", len(samples)) as advance:
        for sample in samples:
            try:
                facts[id(sample)] = modality.measure(sample)
            except CnncliError as error:
                unreadable.append(str(error))
            advance(1)
    return facts, unreadable


def content_digest(sample: Sample) -> str:
    """A hash of what the sample holds (a file's bytes, the pixels of an idx image, a sentence),
    so that copies under other names are found; a file that cannot be read hashes its name."""
    hasher = hashlib.sha256()
    if sample.content is None:
        try:
            with open(sample.locator, "rb") as stream:  # a block at a time: a huge file costs no memory
                for block in iter(lambda: stream.read(1 << 20), b""):
                    hasher.update(block)
        except OSError:
            hasher.update(b"unreadable:" + sample.locator.encode())
    elif isinstance(sample.content, str):
        hasher.update(b"text:" + sample.content.encode())
    elif hasattr(sample.content, "numpy"):
        hasher.update(str(tuple(sample.content.shape)).encode() + sample.content.numpy().tobytes())
    else:
        hasher.update(repr(sample.content).encode())
    return hasher.hexdigest()[:20]


def class_table(parts: dict[str, list[Sample]], labels: list[str], facts: dict[int, dict]) -> dict[str, dict]:
    """Per class: its count in each part, and the median of each numeric measure."""
    table = {label: {part: 0 for part in parts} for label in labels}
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for part, samples in parts.items():
        for sample in samples:
            table.setdefault(sample.label, {name: 0 for name in parts})[part] += 1
            for key, value in facts.get(id(sample), {}).items():
                if isinstance(value, (int, float)):
                    values[sample.label][key].append(value)
    for label, row in table.items():
        row["median"] = {key: round(statistics.median(found), 4) for key, found in values[label].items()}
    return table


def summarise(facts: list[dict]) -> dict[str, dict]:
    """Numbers as min / median / mean / max, strings as their five most common values."""
    summary = {}
    for key in dict.fromkeys(key for fact in facts for key in fact):
        found = [fact[key] for fact in facts if key in fact]
        if all(isinstance(value, (int, float)) for value in found):
            summary[key] = {"min": min(found), "median": round(statistics.median(found), 4),
                            "mean": round(statistics.fmean(found), 4), "max": max(found)}
        else:
            summary[key] = {"values": dict(Counter(map(str, found)).most_common(5)), "distinct": len(set(found))}
    return summary


def duplicate_groups(everything: list[tuple[str, Sample]], digests: dict[int, str]) -> list[dict]:
    """Groups of samples with the same content, each with their parts and labels."""
    groups = defaultdict(list)
    for part, sample in everything:
        groups[digests[id(sample)]].append((part, sample))
    return [{"samples": [sample.locator for _, sample in group], "parts": [part for part, _ in group],
             "labels": [sample.label for _, sample in group]}
            for group in groups.values() if len(group) > 1]


def test_overlap(parts: dict[str, list[Sample]], digests: dict[int, str]) -> list[dict]:
    """Test samples whose content is also in the training or validation part."""
    seen = {}
    for sample in parts["train"] + parts["val"]:
        seen.setdefault(digests[id(sample)], sample.locator)
    return [{"test": sample.locator, "train": seen[digests[id(sample)]]}
            for sample in parts["test"] if digests[id(sample)] in seen]


def warnings(result: dict, parts: dict[str, list[Sample]]) -> list[str]:
    """One line for each problem found."""
    lines = [note.removeprefix("warning: ") for note in result["notes"] if note.startswith("warning: ")]
    if result["unreadable"]:
        lines.append(f"{counted(len(result['unreadable']), 'sample')} cannot be read, e.g. {result['unreadable'][0]}")
    training = {label: row["train"] for label, row in result["classes"].items()}
    if training and min(training.values()) > 0:
        largest, smallest = max(training, key=training.get), min(training, key=training.get)
        ratio = training[largest] / training[smallest]
        if ratio >= IMBALANCE_RATIO:
            lines.append(f"class imbalance: {largest!r} has {training[largest]} training samples, {smallest!r} "
                         f"{training[smallest]} ({ratio:.1f}x)")
    if parts["test"]:
        missing = [label for label, row in result["classes"].items() if not row["test"]]
        if missing:
            lines.append(f"no test samples for class {', '.join(map(repr, missing[:EXAMPLES]))}"
                         f"{' and others' if len(missing) > EXAMPLES else ''}")
    groups = result["duplicates"]
    if groups:
        copies = sum(len(group["samples"]) - 1 for group in groups)
        conflicting = sum(len(set(group["labels"])) > 1 for group in groups)
        example = " = ".join(groups[0]["samples"][:2])
        labelled = f", {conflicting} with different labels" if conflicting else ""
        lines.append(f"duplicates: {counted(copies, 'sample')} with the same content as another "
                     f"({counted(len(groups), 'group')}{labelled}), e.g. {example}")
    if result["overlap"]:
        first = result["overlap"][0]
        lines.append(f"test overlaps training: {len(result['overlap'])} of {len(parts['test'])} test samples have "
                     f"the content of a training sample, e.g. {first['test']} = {first['train']}")
    return lines


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def draw_data(modality, labels: list[str], train: list[Sample], facts: dict[int, dict], out_dir: Path) -> list[str]:
    """samples.png (readable training samples, a row per class) and measures.png (histograms)."""
    from cnncli.output.plots import histograms_png, thumbnail_grid_png

    rows = []
    for label in labels[:GRID_CLASSES]:
        chosen = [s for s in train if s.label == label and id(s) in facts][:GRID_PER_CLASS]
        rows.append((label, [(lambda axis, s=s: modality.draw_thumbnail(s, axis), _short(s.locator)) for s in chosen]))
    title = f"training samples per class{f' (first {GRID_CLASSES} classes)' if len(labels) > GRID_CLASSES else ''}"
    files = {"samples.png": thumbnail_grid_png(rows, modality.thumbnail_aspect, title)}
    numbers = defaultdict(list)
    for fact in facts.values():
        for key, value in fact.items():
            if isinstance(value, (int, float)):
                numbers[key].append(value)
    if numbers:
        files["measures.png"] = histograms_png(numbers)
    for name, content in files.items():
        write_file(out_dir / name, content)
    return [str(out_dir / name) for name in files]


def _short(locator: str, width: int = 28) -> str:
    name = Path(locator.split("#")[0]).name + (f"#{locator.split('#')[1]}" if "#" in locator else "")
    return name if len(name) <= width else "..." + name[-width + 3:]
