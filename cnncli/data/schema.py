"""The `data` section of a recipe: where samples come from, how they are labelled and split.

It lives beside the code that reads it (sources, split); the recipe schema (cnncli.recipe.schema)
completes it with one `data.<name>` section per registered modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

PathList = Union[str, list[str]]


@dataclass
class SplitConfig:
    """How samples become train / val / test when no separate source is given for a part."""

    test_fraction: float = 0.2  # share of samples for test when there is no test source or rule
    val_fraction: float = 0.1  # share of the training part held out for validation (0 = none)
    test_pattern: str | None = None  # regex searched in the file name: matches go to test
    test_every: int | None = None  # position % test_every == test_offset goes to test (position in its file)
    test_offset: int = 0  # which of the test_every folds is test: 0..test_every-1 (cross-validation)
    test_range: list[int] | None = None  # [start, end): positions in this range go to test
    seed: int = 0  # seeds the random fractions; the split is recorded in the bundle
    # regex searched in the file name, its first group (or whole match) naming the sample's group (a
    # speaker, a session): the seeded fractions and rotate_val's folds then hold out whole groups
    group_regex: str | None = None


@dataclass
class DataConfig:
    """Where samples come from, how they are labelled and split, and how they become tensors."""

    modality: str = "image"  # checked against the registered modalities by the recipe schema
    root: str = "."  # train/val/test paths are relative to this (itself relative to the recipe)
    train: PathList = "."  # a folder, manifest, idx file or text file(s); globs allowed
    val: PathList | None = None
    test: PathList | None = None
    format: Literal["auto", "folder", "files", "manifest", "idx", "lines", "labelled_lines"] = "auto"
    label_regex: str | None = None  # first group of a match in the file name is the label
    # A manifest's columns: a name from its header row, or a number from 0 (a table without one)
    path_column: Union[int, str] = "path"
    label_column: Union[int, str] = "label"
    text_column: Union[int, str] = "text"
    header: Union[bool, Literal["auto"]] = "auto"  # a .csv/.tsv starts with a row of names; auto: unless it reads as data
    encoding: str = "utf-8"
    split: SplitConfig = field(default_factory=SplitConfig)
    in_memory: Union[bool, Literal["auto"]] = "auto"  # hold decoded splits in memory; auto: unless over memory_budget
    memory_budget: float | None = None  # GB the encoded splits may take in memory; None = half of what is available
    workers: int | None = None  # processes decoding files (up front or streaming); None = one per core, at most 8
    # + one section per registered modality, `data.<name>` (see `schema`)
