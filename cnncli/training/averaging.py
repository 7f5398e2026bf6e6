"""train.ema: a moving average of the weights, the network a run validates and keeps; train.lookahead:
slow weights the network is pulled back to."""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """An exponential moving average of a network's weights (and batch-norm statistics), updated
    after every optimiser step. The average generalises better than the last step's weights,
    the way an ensemble of the recent steps would, at no cost at prediction time."""

    def __init__(self, network: nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self._averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def network(self) -> nn.Module:
        return self._averaged.module

    def update(self, network: nn.Module) -> None:
        self._averaged.update_parameters(network)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._averaged.load_state_dict(state)


class Lookahead:
    """train.lookahead: slow weights that every EVERY steps take a step towards the network and
    put it back where they are (Zhang et al. 2019), with airbench's schedule (Jordan 2024): the
    slow weights' decay rises as (step / total steps)^3 to 0.95^5, so early training runs free and
    the last steps average over many. Unlike train.ema the network itself is pulled back: later
    steps start from the average. Batch norm's statistics are averaged with the weights."""

    EVERY = 5
    DECAY = 0.95 ** 5

    def __init__(self, network: nn.Module):
        self.slow = {name: value.detach().clone() for name, value in network.state_dict().items()
                     if value.is_floating_point()}

    @torch.no_grad()
    def update(self, network: nn.Module, step: int, total_steps: int) -> None:
        """After optimiser step number `step` (from 1) of `total_steps`."""
        if step % self.EVERY:
            return
        decay = self.DECAY * min(step / max(total_steps, 1), 1.0) ** 3
        for name, value in network.state_dict().items():
            if name in self.slow:
                self.slow[name].lerp_(value, 1 - decay)
                value.copy_(self.slow[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.slow[name].copy_(value)
