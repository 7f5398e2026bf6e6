"""Scores you can act on: temperature scaling and the expected calibration error.

A network trained to a low loss is often over-confident: it says 0.99 where it is right nine
times in ten. Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks")
divides the network's outputs by one number T, fitted on held-out data by minimising the negative
log-likelihood: T > 1 softens every score, T < 1 sharpens them, and since dividing by T keeps the
classes in the same order no prediction changes. For an ensemble the outputs are the logarithms of
its averaged probabilities, so the same division applies.

The expected calibration error (ECE) is the gap between confidence and accuracy: predictions are
put into 15 bins of equal width by their top score, and the absolute difference between each
bin's accuracy and its mean top score is averaged, weighted by the bin's share of predictions.
"""

from __future__ import annotations

import math

import torch

ECE_BINS = 15
LOWEST, HIGHEST = 0.05, 20.0  # the temperatures searched: from 20x sharper to 20x softer


def scaled_probabilities(outputs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(outputs / T); T = 1 is the plain softmax, bit for bit (bundles without a temperature)."""
    return torch.softmax(outputs if temperature == 1.0 else outputs / temperature, dim=1)


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over `bins` equal-width bins of the top score."""
    if len(targets) == 0:
        return 0.0
    which, confidence, correct = _binned(probabilities, targets, bins)
    total = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            gap = correct[members].mean() - confidence[members].mean()
            total += float(gap.abs()) * int(members.sum())
    return total / len(targets)


def reliability_bins(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's numbers (`eval --report`): for each of the ECE's bins, its
    bounds, how many predictions fall in it, their mean top score and their accuracy (both 0
    when empty)."""
    which, confidence, correct = _binned(probabilities, targets, bins)
    rows = []
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        rows.append({"lower": round(index / bins, 6), "upper": round((index + 1) / bins, 6), "count": count,
                     "confidence": round(float(confidence[members].mean()), 6) if count else 0.0,
                     "accuracy": round(float(correct[members].mean()), 6) if count else 0.0})
    return rows


def _binned(probabilities: torch.Tensor, targets: torch.Tensor,
            bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bin of each prediction, its top score, 1.0 where it is right), in float64."""
    confidence, predicted = probabilities.max(dim=1)
    which = (confidence.double() * bins).ceil().clamp(1, bins).long() - 1  # (0, 1/bins] is bin 0
    return which, confidence.double(), (predicted == targets).double()


def negative_log_likelihood(outputs: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of the scaled outputs (the quantity the temperature minimises)."""
    scaled = outputs.double() / temperature
    return float(torch.nn.functional.cross_entropy(scaled, targets))


def fit_temperature(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `targets`.

    The likelihood is convex in 1/T, so a golden-section search over log T finds the minimum;
    it is deterministic, needs no gradients and cannot step outside the range."""
    low, high = math.log(LOWEST), math.log(HIGHEST)
    ratio = (math.sqrt(5) - 1) / 2
    loss = lambda log_t: negative_log_likelihood(outputs, targets, math.exp(log_t))  # noqa: E731
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(60):
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return math.exp((low + high) / 2)


def calibrate(outputs: torch.Tensor, targets: torch.Tensor, source: str) -> dict:
    """The bundle's calibration record: the temperature fitted on `outputs` (raw network outputs
    of held-out rows) and what it does there. With no mistake to learn from (every held-out row
    right), the likelihood only grows as T shrinks towards 0, so T stays 1."""
    record = {"temperature": 1.0, "fitted_on": None, "n": len(targets)}
    if len(targets) == 0:
        return {**record, "note": "no validation data to fit a temperature on"}
    before = scaled_probabilities(outputs)
    if bool((before.argmax(dim=1) == targets).all()):
        return {**record, "note": f"every one of the {len(targets)} {source} rows is right: nothing to fit"}
    temperature = round(fit_temperature(outputs, targets), 4)
    return {"temperature": temperature, "fitted_on": source, "n": len(targets),
            "ece_before": round(expected_calibration_error(before, targets), 4),
            "ece_after": round(expected_calibration_error(scaled_probabilities(outputs, temperature), targets), 4),
            "nll_before": round(negative_log_likelihood(outputs, targets), 4),
            "nll_after": round(negative_log_likelihood(outputs, targets, temperature), 4)}
