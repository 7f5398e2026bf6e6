"""Grad-CAM: a known answer (a corner decides the class), cells placed where their receptive
fields sit, layers by name, ensembles averaged; and the calibration figures of the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnncli.bundle.io import load_bundle
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.nn.calibration import expected_calibration_error, reliability_bins
from cnncli.nn.gradcam import default_layers, grad_cam, place_on_input
from cnncli.nn.layers import cell_centres
from cnncli.nn.model import Ensemble, build_network
from cnncli.recipe.config import load_config
from cnncli.training.train import train

SIZE = 16
CORNERS = {"top-left": (slice(0, 5), slice(0, 5)), "top-right": (slice(0, 5), slice(11, 16)),
           "bottom-left": (slice(11, 16), slice(0, 5)), "bottom-right": (slice(11, 16), slice(11, 16))}
QUADRANTS = {"top-left": (slice(0, 8), slice(0, 8)), "top-right": (slice(0, 8), slice(8, 16)),
             "bottom-left": (slice(8, 16), slice(0, 8)), "bottom-right": (slice(8, 16), slice(8, 16))}


def corner_image(label: str, generator) -> np.ndarray:
    """Dim noise everywhere, and a bright patch in the corner that names the class."""
    pixels = generator.integers(0, 90, size=(SIZE, SIZE)).astype("uint8")
    pixels[CORNERS[label]] = 230
    return pixels


@pytest.fixture(scope="module")
def corner_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("corners")
    generator = np.random.default_rng(0)
    for label in CORNERS:
        (root / "data" / label).mkdir(parents=True)
        for index in range(24):
            Image.fromarray(corner_image(label, generator)).save(root / "data" / label / f"{index:02d}.png")
    config = load_config({
        "data": {"modality": "image", "root": str(root / "data"), "image": {"size": [SIZE, SIZE], "color": "grayscale"},
                 "split": {"test_fraction": 0.25, "val_fraction": 0.0}},
        "model": {"blocks": [{"conv": {"channels": 8, "kernel": 3, "padding": "same"}},
                             {"pool": {"type": "max", "size": 2}},
                             {"conv": {"channels": 16, "kernel": 3, "padding": "same"}},
                             {"pool": {"type": "avg", "size": "global"}}]},
        "train": {"epochs": 8, "batch_size": 8, "lr": 0.01, "threads": 1, "keep": "last"}})
    outcome = train(config, root / "bundle")
    assert outcome.metrics["test"]["accuracy"] == 1.0  # the task is easy; the heat map is the question
    return load_bundle(root / "bundle"), root


def test_grad_cam_puts_most_of_the_heat_in_the_corner_that_decides_the_class(corner_bundle):
    bundle, root = corner_bundle
    generator = np.random.default_rng(123)  # images the network has never seen
    for label in CORNERS:
        for index in range(3):
            path = root / f"unseen-{label}-{index}.png"
            Image.fromarray(corner_image(label, generator)).save(path)
            cam = grad_cam(bundle.network, bundle.modality.encode(Sample(str(path))))
            assert bundle.labels[cam.target] == label
            assert cam.layers == ["conv2"] and cam.heat.shape == (SIZE, SIZE)
            mass = {name: float(cam.heat[rows, columns].sum() / cam.heat.sum()) for name, (rows, columns) in
                    QUADRANTS.items()}
            assert mass[label] > 0.5, (label, mass)


def test_any_convolution_can_be_named_and_a_wrong_name_lists_them(corner_bundle):
    bundle, root = corner_bundle
    encoded = bundle.modality.encode(Sample(str(next((root / "data" / "top-left").glob("*.png")))))
    first = grad_cam(bundle.network, encoded, "conv1")
    assert first.layers == ["conv1"] and first.heat.shape == (SIZE, SIZE) and float(first.heat.max()) == 1.0
    assert grad_cam(bundle.network, encoded, "conv1.conv").layers == ["conv1.conv"]
    with pytest.raises(CnncliError, match="--layer conv9: no such layer .*conv1, conv2"):
        grad_cam(bundle.network, encoded, "conv9")


def test_cells_are_placed_where_their_receptive_fields_are_centred():
    # Kim's text convolution: 3 rows, 2 zero rows padded above, so output cell i reads rows i-2..i.
    backbone = build_network([{"conv": {"channels": 2, "kernel": [3, "full"], "padding": [2, 0]}}],
                             torch.nn.Identity(), (1, 10, 4), 2).backbone
    assert cell_centres(backbone, "conv1") == ([-1.0, 1.5], [1.0, 1.0])
    cam = torch.zeros(12, 1)
    cam[5, 0] = 1.0
    heat = place_on_input(cam, cell_centres(backbone, "conv1"), (10, 4))
    assert heat.argmax(dim=0).tolist() == [4, 4, 4, 4]  # centred on row 5 - 1
    # Two stride-2 'same' convolutions: cell j of the second is centred on input 4 j + 1.5.
    backbone = build_network([{"conv": {"channels": 2, "kernel": 4, "stride": 2, "padding": "same"}}] * 2,
                             torch.nn.Identity(), (1, 16, 16), 2).backbone
    first, step = cell_centres(backbone, "conv2")
    assert step == [4.0, 4.0] and first == [1.5, 1.5]
    assert cell_centres(build_network([{"conv": {"channels": 2, "kernel": 3}}, {"pool": {"size": "global"}}],
                                      torch.nn.Identity(), (1, 8, 8), 2).backbone, "pool1") is None


def test_a_parallel_network_is_explained_at_the_last_convolution_of_every_branch():
    blocks = [{"parallel": [[{"conv": {"channels": 2, "kernel": [2, "full"]}}, {"pool": {"size": "global"}}],
                            [{"conv": {"channels": 2, "kernel": [3, "full"]}},
                             {"conv": {"channels": 2, "kernel": [2, 1]}}, {"pool": {"size": "global"}}]]}]
    network = build_network(blocks, torch.nn.Identity(), (1, 9, 5), 2)
    assert default_layers(network) == ["parallel1.branch0.conv1", "parallel1.branch1.conv2"]
    cam = grad_cam(network, torch.randn(1, 9, 5))
    assert cam.heat.shape == (9, 5)


def test_an_ensemble_averages_the_maps_of_its_members_for_its_own_prediction():
    torch.manual_seed(0)
    blocks = [{"conv": {"channels": 4, "kernel": 3, "padding": "same"}}, {"pool": {"size": "global"}}]
    members = [build_network(blocks, torch.nn.Identity(), (1, 8, 8), 3) for _ in range(2)]
    ensemble = Ensemble(members).eval()
    encoded = torch.randn(1, 8, 8)
    cam = grad_cam(ensemble, encoded)
    assert cam.members == 2 and cam.target == int(ensemble(encoded[None]).argmax())
    alone = [grad_cam(member, encoded, target=cam.target).heat for member in members]
    expected = torch.stack(alone).mean(0)
    assert torch.allclose(cam.heat, expected / expected.max(), atol=1e-6)
    assert "averaged over the 2 members" in cam.describe(["a", "b", "c"])["members"]


def test_expected_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    probabilities = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [1.0, 0.0]])
    targets = torch.tensor([0, 1, 1, 0])
    # bins of 0.1: 0.55 (wrong), 0.7 (right), 0.9 (right), 1.0 (right): (0.55 + 0.3 + 0.1 + 0) / 4
    assert expected_calibration_error(probabilities, targets, 10) == pytest.approx(0.2375)
    bins = reliability_bins(probabilities, targets, 10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert bins[5] == {"lower": 0.5, "upper": 0.6, "count": 1, "confidence": pytest.approx(0.55), "accuracy": 0.0}
    # Right three times out of four at 0.75: calibrated, whatever the bins.
    calibrated = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(calibrated, torch.tensor([0, 0, 0, 1]), 15) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(torch.empty(0, 2), torch.empty(0, dtype=torch.long)) == 0.0
