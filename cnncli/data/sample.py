"""The unit every data source yields and every modality consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One labelled (or unlabelled) input.

    `locator` names the sample for humans and error messages: a file path, `file:line`, or
    `file#index`. `content` holds the sample itself when the source already has it in memory
    (the pixels of an idx image, the text of a sentence); when it is None the modality reads
    `locator` as a file. `position` is the sample's index within its file or listing, which
    position-based split rules use.
    """

    locator: str
    label: str | None = None
    content: Any = None
    position: int = 0
