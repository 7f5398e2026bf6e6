"""train.ema: a moving average of the weights, the network a run validates and keeps."""

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
