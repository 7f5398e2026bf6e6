"""Kim's sentence network as prediction runs it on the CPU: a batch's sentences laid end to end.

A batch of sentences is a picture as wide as its longest sentence, and a server's batches are
mixed: in one of 18 SST or MR sentences the average is half as long as the longest, so half of
every filter's work is on padding. Here the stem and the branches run as one module that lays the
sentences' tokens end to end, with (widest filter - 1) zero rows before each and after the last,
and computes:

- one product of the tokens' embeddings with every row of every filter (E @ W): each token's
  share of each window it falls in;
- each branch's window sums as a few shifted slices of it added up (one addition per shift, for
  branches sorted by width);
- each sentence's maximum over its own windows (one segment_reduce), then the ReLU.

The values are the unpacked network's up to float rounding (about 1e-7). One thread, random SST
and MR sentences in batches as a server's are (docs/BENCHMARKS.md): 18 sentences 2.4 ms against
3.4, 64 6.6 against 11.8. On predict's length-sorted batches there is little padding to skip, and
past RowProduct.LARGE places (sentences x width) the unpacked convolutions win (256 sentences:
26.7 ms against 31.3), so those batches run unpacked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.modalities.text.vocabulary import PAD_ID
from cnncli.nn.blocks import Parallel
from cnncli.nn.inference import RowProduct, RowProductMax


def packed_sentences(stem: nn.Module, backbone: nn.Module) -> nn.Module | None:
    """The stem (TokenEmbedding) and `backbone` as one PackedSentences when the backbone is
    Kim's branches as for_inference leaves them (each a RowProductMax over one channel of the
    stem's full width, with h - 1 rows of padding); else None."""
    table = stem.tuned if stem.static is None else stem.static if stem.tuned is None else None
    if not isinstance(table, nn.Embedding) or not isinstance(backbone, Parallel):
        return None
    branches = list(backbone.branches)
    if not branches or not all(isinstance(branch, RowProductMax) for branch in branches):
        return None
    products = [branch.product for branch in branches]
    dims = table.embedding_dim
    if any(p.stride != 1 or p.padding != p.height - 1 or p.filters.shape[0] != p.height * dims for p in products):
        return None
    return PackedSentences(stem, backbone, table.weight.detach(), products)


class PackedSentences(nn.Module):
    """ids (N, L) -> (N, channels of all branches, 1, 1): what the stem and Kim's branches give,
    computed on the sentences laid end to end (see the module's docstring). A batch of more than
    RowProduct.LARGE places runs unpacked, and so does one in which a sentence fills the whole
    width (no padding after it, so no all-zero window whose value, the bias, joins its maximum)."""

    def __init__(self, stem: nn.Module, backbone: nn.Module, table: torch.Tensor, products: list[nn.Module]):
        super().__init__()
        self.unpacked = nn.Sequential(stem, backbone)
        self.register_buffer("table", table)
        widest = max(product.height for product in products)
        self.margin = widest - 1
        dims = table.shape[1]
        starts = [0]
        for product in products:
            starts.append(starts[-1] + product.filters.shape[1])
        columns, self.shifts = [], []  # shifts: (shift, first source column, first output column, width)
        used = 0
        for shift in range(widest):  # window row j of a filter of height h reads packed row (start + shift)
            for index, product in enumerate(products):
                row = shift - (widest - product.height)
                if row < 0:
                    continue
                columns.append(product.filters[row * dims:(row + 1) * dims])
                width = product.filters.shape[1]
                last = self.shifts[-1] if self.shifts else None
                if last and last[0] == shift and last[1] + last[3] == used and last[2] + last[3] == starts[index]:
                    self.shifts[-1] = (shift, last[1], last[2], last[3] + width)
                else:
                    self.shifts.append((shift, used, starts[index], width))
                used += width
        self.register_buffer("filters", torch.cat(columns, dim=1).contiguous())
        self.register_buffer("bias", torch.cat([product.bias if product.bias is not None
                                                else product.filters.new_zeros(product.filters.shape[1])
                                                for product in products]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[0] == 0 or ids.numel() > RowProduct.LARGE:
            return self.unpacked(ids)
        return self.packed(ids)

    def packed(self, ids: torch.Tensor) -> torch.Tensor:
        """The packed computation itself, whatever the batch's size (forward chooses)."""
        count, width = ids.shape
        positions = torch.arange(1, width + 1)
        lengths = ((ids != PAD_ID) * positions).amax(dim=1)  # 1 + each sentence's last token's place
        if int(lengths.max()) >= width:
            return self.unpacked(ids)
        margin = self.margin
        kept = F.pad(ids, (margin, 0))[torch.arange(margin + width) < (lengths + margin)[:, None]]
        tokens = torch.cat([kept, ids.new_full((margin,), PAD_ID)])
        shares = F.embedding(tokens, self.table) @ self.filters  # (rows, every filter row's columns)
        windows = len(tokens) - margin
        sums = self.bias.expand(windows, -1).clone()
        for shift, source, target, size in self.shifts:
            sums[:, target:target + size] += shares[shift:shift + windows, source:source + size]
        best = torch.segment_reduce(sums, "max", lengths=lengths + margin, axis=0)
        return torch.maximum(best, self.bias).relu_().view(count, -1, 1, 1)
