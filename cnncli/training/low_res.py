"""train.low_res_scale and train.low_res_share: the first steps of a fit see smaller pictures.

Early in training a network learns coarse shapes and colours, which a picture scaled down still
shows; a step on a picture scaled by s costs about s^2 of one at full size (the convolutions'
work follows the pixels). So the first `low_res_share` of the steps see each augmented batch
scaled by `low_res_scale` (bilinear, antialiased), and the rest, where the schedule's rate
falls and the fine detail is learnt, see the pictures as they are: validation, test and
prediction always do. Progressive resizing (fast.ai's DAWNBench runs, Howard 2018); the budget
(cnncli.training.budget) counts the two kinds of step apart, so that a run given 3 minutes
takes more steps in them. Images only: the networks that take smaller pictures are those that
end in a global pool, which fit() checks before the first step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnncli.errors import CnncliError


def scaling(settings: Any) -> bool:
    """Whether a recipe's train section scales any step's pictures down."""
    return settings.low_res_scale < 1 and settings.low_res_share > 0


def low_res_steps(settings: Any, total_steps: int) -> int:
    """How many of a fit's first steps see scaled-down pictures."""
    return int(settings.low_res_share * total_steps) if scaling(settings) else 0


def scaled_size(shape: torch.Size | tuple, scale: float) -> tuple[int, int]:
    """A picture's (height, width) scaled by `scale`, each side at least one pixel."""
    return tuple(max(1, round(side * scale)) for side in shape[-2:])


def input_size(loop: Any, shape: torch.Size) -> tuple[int, int] | None:
    """The size the batch at `loop`'s next step is scaled to, or None: as it is."""
    if loop.step >= low_res_steps(loop.settings, loop.total_steps):
        return None
    return scaled_size(shape, loop.settings.low_res_scale)


def shrunk(batch: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """`batch` (N, C, H, W) scaled to `size` (None: as it is)."""
    if size is None or tuple(batch.shape[-2:]) == size:
        return batch
    return F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


def check_low_res(network: torch.nn.Module, input_shape: tuple, settings: Any, device: torch.device) -> None:
    """Refuse train.low_res_scale, before any step, for a network that needs its full input size
    (a flatten before a linear layer, or pools the smaller picture does not last through)."""
    if not scaling(settings):
        return
    size = scaled_size(input_shape, settings.low_res_scale)
    probe = torch.zeros((2, *input_shape[:-2], *size), device=device)
    training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(probe)
    except RuntimeError as error:
        raise CnncliError(f"train.low_res_scale: {settings.low_res_scale} gives {size[0]} x {size[1]} pictures, "
                          f"which this network cannot take ({str(error).splitlines()[0]}); it needs a global pool "
                          "before its classifier and maps that last through its pools") from None
    finally:
        network.train(training)
