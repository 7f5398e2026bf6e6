"""The parallel block: branches of blocks that read the same input, their outputs concatenated."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.build import build_blocks
from cnncli.nn.blocks.kinds import BlockKind


class Parallel(nn.Module):
    """Run branches on the same input and concatenate their outputs along the channel axis."""

    def __init__(self, branches: list[nn.Sequential]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def build_parallel(options: Any, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Branches are named as blocks are (`parallel1.branch0.conv1`), each a list of block specs."""
    if not isinstance(options, list) or not options:
        raise CnncliError(f"{where}.parallel: expected a list of branches, each a list of blocks")
    branches, shapes = [], []
    for index, branch_specs in enumerate(options):
        branch, branch_shape = build_blocks(branch_specs, shape, f"{where}.parallel[{index}]")
        branches.append(branch)
        shapes.append(branch_shape)
    if any(other[1:] != shapes[0][1:] for other in shapes):
        raise CnncliError(f"{where}.parallel: branch outputs {shapes} differ beyond the channel axis; "
                          "end each branch with a global pool to concatenate them")
    return Parallel(branches), (sum(s[0] for s in shapes), *shapes[0][1:])


PARALLEL = BlockKind(build_parallel, options=None)
