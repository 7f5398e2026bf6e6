"""Split samples into train / val / test by the recipe's rule, and record what was done.

Rules, in order of precedence for the test part: a separate `data.test` source; a file-name
regex (`split.test_pattern`); a position rule (`test_every`, `test_range`); a seeded, stratified
fraction. Validation comes from `data.val` or a seeded, stratified fraction of the training part;
with `train.rotate_val`, from rotating folds of the training part instead (`Splits.folds`).
A data.train folder whose sub-folders are train/, val/ and test/ (the usual download's layout)
gives those sources itself, unless the recipe names them (`with_split_folders`).

With `split.group_regex` (the speaker, session or patient a file name names), the seeded parts
hold out whole groups instead: the same voice in training and validation would make validation
measure voices the network knows, so keeping the best epoch and fitting the calibration
temperature would both be tuned for them rather than for the new voices a user brings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from cnncli.data.sample import Sample
from cnncli.data.sources import ReadReport, read_sources, refuse_misread_labels, split_folders
from cnncli.errors import CnncliError


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    labels: list[str]
    record: dict = field(default_factory=dict)  # how the split was made, stored in the bundle
    folds: list[int] | None = None  # with train.rotate_val: the validation fold of each training sample
    fold_count: int = 0  # how many folds there are (0 without folds)
    notes: list[str] = field(default_factory=list)  # what reading found: encodings detected, lines skipped


def load_splits(config: Any, modality: Any) -> Splits:
    """Read the recipe's sources for `modality` (its class or an instance; see read_sources) and
    split them; labels are those of the training part."""
    data, rule = config.data, config.data.split
    data, layout = with_split_folders(data)
    report = ReadReport()
    pool = read_sources(data.train, data, modality, report)
    refuse_misread_labels(pool, report, f"data.train {data.train}")
    if data.test is not None:
        rest, test = pool, read_sources(data.test, data, modality, report)
        test_rule = f"source {data.test}"
    else:
        rest, test, test_rule = split_test(pool, rule)
    folds, count = None, 0
    kind = held_out_kind(rule.group_regex)
    if config.train.rotate_val:
        train, val = rest + (read_sources(data.val, data, modality, report) if data.val is not None else []), []
        count = fold_count(rule.val_fraction)
        if rule.group_regex:
            folds = group_folds(file_groups(train, rule.group_regex), count, rule.seed + 1)
            count = max(folds, default=0) + 1
        else:
            folds = stratified_folds(train, count, rule.seed + 1)
        val_rule = (f"rotating: ensemble member i validates on fold i % {count} of {count} seeded {kind} folds "
                    f"of the training part{' (with ' + str(data.val) + ')' if data.val is not None else ''} "
                    f"and trains on the others (seed {rule.seed})")
    elif data.val is not None:
        train, val = rest, read_sources(data.val, data, modality, report)
        val_rule = f"source {data.val}"
    else:
        train, val = held_out_fraction(rest, rule.val_fraction, rule.seed + 1, rule.group_regex)
        val_rule = f"seeded {kind} fraction {rule.val_fraction} of the rest (seed {rule.seed})"
    if not train:
        raise CnncliError("data: the training split is empty; check data.train and data.split")
    for part, samples in (("train", train), ("val", val), ("test", test)):
        unlabelled = next((sample for sample in samples if sample.label is None), None)
        if unlabelled:
            raise CnncliError(f"{unlabelled.locator}: has no label (set data.label_regex or use class folders)")
    labels = sorted({sample.label for sample in train}, key=natural_key)
    check_known_labels(val + test, labels)
    record = {
        "test_rule": test_rule,
        "val_rule": val_rule,
        "counts": {"train": len(train), "val": len(val), "test": len(test)},
        "test_digest": digest(test),
    }
    if rule.group_regex and val and data.val is None:
        record["val_groups"] = named_groups(file_groups(val, rule.group_regex))
    if report.skipped or report.encodings or report.columns:
        record["read"] = report.record()
    return Splits(train, val, test, labels, record, folds, count, layout + report.notes())


def with_split_folders(data: Any) -> tuple[Any, list[str]]:
    """`data` with its train, val and test sources taken from a folder laid out by split
    (cnncli.data.sources.split_folders) when data.train is one such folder, and the line that
    says so; a val or test source the recipe names itself is kept."""
    train = data.train if isinstance(data.train, str) else data.train[0] if len(data.train) == 1 else None
    if train is None or data.format not in ("auto", "folder") or data.label_regex:
        return data, []
    folder = Path(data.root).expanduser() / Path(train).expanduser()
    parts = split_folders(folder) if folder.is_dir() else {}
    if not parts:
        return data, []
    chosen = {name: data.val if name == "val" else data.test for name in ("val", "test")}
    sources = {name: str(parts[name]) for name in ("val", "test") if name in parts and chosen[name] is None}
    data = dataclasses.replace(data, train=str(parts["train"]), **sources)
    read = ", ".join(f"{parts[name].name}/ as {name}" for name in ("train", *sources))
    return data, [f"data.train: {folder} is split into folders: reading {read} (each holds class folders)"]


def with_training_samples(splits: Splits, extra: list[Sample]) -> Splits:
    """`splits` with `extra` samples (made by the modality) added to training, their labels
    joining the label list, dealt round-robin into the folds when there are folds."""
    if not extra:
        return splits
    train = splits.train + extra
    labels = sorted({sample.label for sample in train}, key=natural_key)
    folds = None
    if splits.folds is not None:
        folds = splits.folds + [position % splits.fold_count for position in range(len(extra))]
    counts = {**splits.record["counts"], "train": len(train)}
    record = {**splits.record, "counts": counts, "made_train_samples": len(extra)}
    return dataclasses.replace(splits, train=train, labels=labels, record=record, folds=folds)


def split_test(samples: list[Sample], rule) -> tuple[list[Sample], list[Sample], str]:
    """(rest, test, description) by the first test rule the recipe sets."""
    if rule.test_pattern:
        try:
            pattern = re.compile(rule.test_pattern)
        except re.error as error:
            raise CnncliError(f"data.split.test_pattern: not a valid regular expression ({error})") from None
        chosen = [bool(pattern.search(file_name(sample))) for sample in samples]
        description = f"file name matches {rule.test_pattern!r}"
    elif rule.test_every:
        chosen = [sample.position % rule.test_every == rule.test_offset for sample in samples]
        description = f"position % {rule.test_every} == {rule.test_offset} in each file"
    elif rule.test_range:
        start, end = rule.test_range
        chosen = [start <= sample.position < end for sample in samples]
        description = f"positions {start} to {end - 1}"
    else:
        rest, test = held_out_fraction(samples, rule.test_fraction, rule.seed, rule.group_regex)
        return rest, test, f"seeded {held_out_kind(rule.group_regex)} fraction {rule.test_fraction} (seed {rule.seed})"
    test = [sample for sample, is_test in zip(samples, chosen) if is_test]
    rest = [sample for sample, is_test in zip(samples, chosen) if not is_test]
    return rest, test, description


def stratified_fraction(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out `fraction` of each label's samples, chosen by a seeded shuffle; order is kept."""
    if fraction <= 0:
        return list(samples), []
    held: set[int] = set()
    for indices in shuffled_by_label(samples, seed):
        count = round(len(indices) * fraction)
        if len(indices) > 1:
            count = min(max(count, 1), len(indices) - 1)
        held.update(indices[:count])
    kept = [sample for index, sample in enumerate(samples) if index not in held]
    return kept, [sample for index, sample in enumerate(samples) if index in held]


def held_out_kind(group_regex: str | None) -> str:
    """How a seeded part is held out, for the split's record."""
    return f"whole groups ({group_regex!r} in the file name)" if group_regex else "stratified"


def held_out_fraction(samples: list[Sample], fraction: float, seed: int,
                      group_regex: str | None) -> tuple[list[Sample], list[Sample]]:
    """(kept, held): `fraction` of the samples held out, stratified by label, or by whole groups."""
    if not group_regex:
        return stratified_fraction(samples, fraction, seed)
    return group_fraction(samples, file_groups(samples, group_regex), fraction, seed)


def file_groups(samples: Sequence[Sample], group_regex: str) -> list[str]:
    """The group each sample's file name names: the regex's first group, or its whole match."""
    try:
        pattern = re.compile(group_regex)
    except re.error as error:
        raise CnncliError(f"data.split.group_regex: not a valid regular expression ({error})") from None
    groups = []
    for sample in samples:
        match = pattern.search(file_name(sample))
        if match is None:
            raise CnncliError(f"{sample.locator}: data.split.group_regex {group_regex!r} finds no group in its name")
        groups.append(match.group(1) if pattern.groups else match.group(0))
    return groups


def named_groups(groups: Sequence[str], most: int = 20) -> list[str]:
    """The distinct groups in natural order, the first `most` of them (a bundle records which)."""
    distinct = sorted(set(groups), key=natural_key)
    return distinct[:most] + ([f"... {len(distinct) - most} more"] if len(distinct) > most else [])


def shuffled_groups(groups: Sequence[str], seed: int) -> tuple[list[str], Counter]:
    """The distinct groups in a seeded order (from natural order, so the same whatever the order
    of the samples), and how many samples each has."""
    sizes = Counter(groups)
    order = sorted(sizes, key=natural_key)
    random.Random(seed).shuffle(order)
    return order, sizes


def group_fraction(samples: list[Sample], groups: list[str], fraction: float,
                   seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out whole groups, in a seeded order, until they make up `fraction` of the samples:
    at least one group (when `fraction` > 0) and never all of them."""
    if fraction <= 0:
        return list(samples), []
    order, sizes = shuffled_groups(groups, seed)
    if len(order) < 2:
        raise CnncliError(f"data.split.group_regex: found one group ({next(iter(order), 'none')!r}); "
                          "holding out whole groups needs at least two")
    held_groups, held = set(), 0
    for group in order[:-1]:
        if held_groups and held >= fraction * len(samples):
            break
        held_groups.add(group)
        held += sizes[group]
    kept = [sample for sample, group in zip(samples, groups) if group not in held_groups]
    return kept, [sample for sample, group in zip(samples, groups) if group in held_groups]


def group_folds(groups: list[str], count: int, seed: int) -> list[int]:
    """A fold for each sample such that a group's samples share one: at most `count` folds (one per
    group when there are fewer), groups taken largest first (ties in a seeded order), each into
    the fold with the fewest samples so far."""
    order, sizes = shuffled_groups(groups, seed)
    order.sort(key=lambda group: -sizes[group])  # stable: equal sizes keep the seeded order
    totals = [0] * min(count, len(order))
    fold_of = {}
    for group in order:
        fold = totals.index(min(totals))
        fold_of[group] = fold
        totals[fold] += sizes[group]
    return [fold_of[group] for group in groups]


def shuffled_by_label(samples: Sequence[Sample], seed: int) -> list[list[int]]:
    """The indices of each label's samples, shuffled by one seeded generator, labels in natural
    order: what the seeded, stratified splits deal from."""
    by_label: dict[str | None, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_label[sample.label].append(index)
    generator = random.Random(seed)
    groups = []
    for label in sorted(by_label, key=lambda x: natural_key(str(x))):
        generator.shuffle(by_label[label])
        groups.append(by_label[label])
    return groups


def fold_count(val_fraction: float) -> int:
    """Folds of about `val_fraction` each (0.1 -> 10), at least two."""
    return max(2, round(1 / val_fraction))


def stratified_folds(samples: list[Sample], count: int, seed: int) -> list[int]:
    """A fold in 0..count-1 for each sample: each label's samples are shuffled (seeded) and dealt
    round-robin, so every fold has about the same share of every label."""
    folds = [0] * len(samples)
    for indices in shuffled_by_label(samples, seed):
        for position, index in enumerate(indices):
            folds[index] = position % count
    return folds


def check_known_labels(samples: Sequence[Sample], labels: Sequence[str]) -> None:
    known = set(labels)
    for sample in samples:
        if sample.label is not None and sample.label not in known:
            raise CnncliError(
                f"{sample.locator}: label {sample.label!r} is not among the trained labels ({', '.join(labels)})"
            )


def file_name(sample: Sample) -> str:
    return PurePath(sample.locator.split("#")[0]).name


def digest(samples: Sequence[Sample]) -> str:
    """A short fingerprint of which samples a split holds, to tell later whether it changed."""
    hasher = hashlib.sha256()
    for sample in samples:
        hasher.update(f"{sample.locator}\t{sample.label}\n".encode())
    return hasher.hexdigest()[:16]


def natural_key(text: str) -> list:
    """Sort '2' before '10', so digit labels come out in numeric order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
