"""Which words made a text network decide: gradient x input on the token embeddings.

For the predicted class, the gradient of its logit with respect to the embedding picture,
times the picture, summed over channels and dimensions, gives one signed score per token:
positive means the token pushed towards that class. Cheap (one backward pass) and exact for
the first-order effect of each token; the padding rows are left out. For an ensemble, the
members' scores for the ensemble's predicted class are averaged.
"""

from __future__ import annotations

import torch
from torch import nn

from cnncli.nn.model import members_of


def token_saliency(network: nn.Module, ids: torch.Tensor) -> list[float]:
    """One score per row of `ids` (one encoded sentence, padding included), in sentence order."""
    ids = ids.unsqueeze(0).to(next(network.parameters()).device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            predicted = network(ids)[0].argmax()
        members = members_of(network)
        scores = sum(_member_saliency(member, ids, predicted) for member in members) / len(members)
    finally:
        network.train(was_training)
    return [float(score) for score in scores.tolist()]


def _member_saliency(network: nn.Module, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """gradient x input of one network's logit for `target`, summed per token row."""
    with torch.enable_grad():
        picture = network.stem(ids).detach().requires_grad_(True)
        logits = network.classifier(network.backbone(picture))
        logits[0, target].backward()
    return (picture.grad * picture).sum(dim=(1, 3))[0]
