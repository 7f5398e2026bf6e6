"""Which words made a text network decide: gradient x input on the token embeddings.

For the predicted class, the gradient of its logit with respect to the embedding picture,
times the picture, summed over channels and dimensions, gives one signed score per token:
positive means the token pushed towards that class. Cheap (one backward pass) and exact for
the first-order effect of each token; the padding rows are left out. For an ensemble, the
members' scores for the ensemble's predicted class are averaged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnncli.atomic import write_file
from cnncli.model import members_of


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


def draw_tokens(tokens: list[str], ids: torch.Tensor, path: Path, stem: nn.Module | None,
                network: nn.Module | None = None) -> None:
    """PNG: the sentence's embedding matrix (rows = tokens), and token saliency bars beside it."""
    from cnncli.plots import figure_png, plt

    tokens = tokens or ["(empty)"]
    panels = 1 + (network is not None)
    height = max(2.5, 0.28 * len(tokens) + 1.2)
    figure, axes = plt.subplots(1, panels, figsize=(5 + 3 * (panels - 1), height), squeeze=False,
                                gridspec_kw={"width_ratios": [3, 2][:panels]})
    matrix_axis = axes[0][0]
    if stem is not None:
        with torch.no_grad():
            device = next(stem.parameters()).device
            picture = stem(ids.unsqueeze(0).to(device))[0, -1, :len(tokens)].cpu()  # the tuned channel of two
        matrix_axis.imshow(picture.numpy(), cmap="coolwarm", aspect="auto", interpolation="nearest")
        matrix_axis.set_xlabel(f"embedding dimension (of {picture.shape[1]})")
    else:
        matrix_axis.imshow(ids[:len(tokens)].unsqueeze(1).numpy(), cmap="viridis", aspect="auto")
        matrix_axis.set_xlabel("token id")
    matrix_axis.set_yticks(range(len(tokens)), tokens, fontsize=8)
    matrix_axis.set_title("as the network sees it", fontsize=9)
    if network is not None:
        scores = token_saliency(network, ids)[:len(tokens)]
        bar_axis = axes[0][1]
        bar_axis.barh(range(len(scores)), scores, color=["tab:red" if score > 0 else "tab:blue" for score in scores])
        bar_axis.set_ylim(len(tokens) - 0.5, -0.5)
        bar_axis.set_yticks(range(len(tokens)), tokens, fontsize=8)
        bar_axis.axvline(0, color="black", linewidth=0.6)
        bar_axis.set_title("saliency for the predicted class", fontsize=9)
    write_file(path, figure_png(figure))
