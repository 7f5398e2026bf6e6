import pytest
import torch

from cnncli.errors import CnncliError
from cnncli.nn.blocks import PatchWhitening, build_blocks
from cnncli.nn.blocks.whiten import EIGENVALUE_FLOOR
from cnncli.nn.data_init import fit_layers_to_data
from cnncli.recipe.config import load_config
from cnncli.training.encoding import TensorData
from cnncli.training.engine import fit
from cnncli.training.train import prepare


def correlated_pictures(count: int, seed: int = 0) -> torch.Tensor:
    """Pictures whose channels and neighbouring pixels move together, as in photos."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(count, 1, 12, 12, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(base, 3, stride=1, padding=1)
    return torch.cat([smooth, 0.8 * smooth + 0.2 * torch.randn(count, 1, 12, 12, generator=generator),
                      -smooth + 0.1 * torch.randn(count, 1, 12, 12, generator=generator)], dim=1)


def test_whitened_patches_are_uncorrelated_the_strong_ones_of_unit_variance_the_faint_ones_bounded():
    block, shape = build_blocks([{"whiten": {"kernel": 2}}], (3, 12, 12), "model.blocks")
    layer = block[0].conv
    pictures = correlated_pictures(400)
    layer.fit_to_data(pictures)
    with torch.no_grad():
        out = layer(correlated_pictures(400, seed=1))  # other pictures of the same kind
    assert shape == (24, 11, 11) and tuple(out.shape[1:]) == shape
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(half.T)
    assert abs(float(covariance.diagonal().max()) - 1) < 0.1 and (covariance.diagonal() < 1.05).all()
    off = covariance - torch.diag(covariance.diagonal())
    assert off.abs().max() < 0.1
    assert torch.equal(out[:, 12:], -out[:, :12])  # each filter and its negative (biases are 0)
    mean_eigenvalue = float((pictures ** 2).mean())  # a patch's covariance has trace 12 x the mean square
    gains = layer.weight[:12].flatten(1).norm(dim=1)
    assert gains.max() <= (EIGENVALUE_FLOOR * mean_eigenvalue) ** -0.5 * 1.01  # the faintest: amplified within bounds


def test_a_lower_floor_amplifies_the_faint_patch_directions_more_and_a_bad_floor_is_named():
    pictures = correlated_pictures(400)
    gains = []
    for floor in (0.1, 0.001):
        block, _ = build_blocks([{"whiten": {"kernel": 2, "floor": floor}}], (3, 12, 12), "model.blocks")
        block[0].conv.fit_to_data(pictures)
        gains.append(float(block[0].conv.weight[:12].flatten(1).norm(dim=1).max()))
    mean_eigenvalue = float((pictures ** 2).mean())
    assert gains[0] <= (0.1 * mean_eigenvalue) ** -0.5 * 1.01 < gains[1] <= (0.001 * mean_eigenvalue) ** -0.5 * 1.01
    with pytest.raises(CnncliError, match=r"model.blocks\[0\].whiten.floor: expected a share"):
        build_blocks([{"whiten": {"floor": -1}}], (3, 12, 12), "model.blocks")


def test_blank_pictures_give_bounded_filters():
    layer = PatchWhitening(3, 2, 1)
    layer.fit_to_data(torch.zeros(4, 3, 6, 6))
    assert torch.isfinite(layer.weight).all() and layer.weight.abs().max() <= EIGENVALUE_FLOOR ** -0.5


def test_the_filters_are_fitted_once_and_kept_in_the_weights():
    layer = PatchWhitening(3, 2, 1)
    layer.fit_to_data(correlated_pictures(50))
    fitted = layer.weight.clone()
    layer.fit_to_data(correlated_pictures(50, seed=3) * 10)
    assert torch.equal(layer.weight, fitted)
    copy = PatchWhitening(3, 2, 1)
    copy.load_state_dict(layer.state_dict())
    copy.fit_to_data(correlated_pictures(50, seed=4) * 10)  # loaded weights (a bundle, model.init) are kept
    assert torch.equal(copy.weight, fitted) and not layer.weight.requires_grad


def test_fit_sets_the_filters_from_a_sample_of_the_training_rows_and_never_trains_them(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8], color: rgb}}, "
                      "split: {val_fraction: 0.25}}\n"
                      "model: {blocks: [{whiten: {kernel: 2}}, {conv: {channels: 4, padding: same, pool: 2, "
                      "batch_norm: true, activation: gelu}}, {pool: {size: global, type: max}}]}\n"
                      "train: {epochs: 2, batch_size: 4, lr: 0.01}\n")
    config = load_config(recipe, [])
    run = prepare(config)
    layer = run.network.backbone[0].conv
    assert not bool(layer.fitted)
    fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    expected = PatchWhitening(3, 2, 1)
    fit_layers_to_data(torch.nn.Sequential(run.network.stem, expected), run.train, torch.device("cpu"),
                       config.train.seed)
    assert bool(layer.fitted) and torch.allclose(layer.weight, expected.weight)  # fitted, then left alone


def test_fitting_reads_a_seeded_sample_not_the_first_rows():
    inputs = torch.cat([0.01 * torch.randn(3000, 3, 4, 4), torch.randn(3000, 3, 4, 4)])  # the first half: faint
    data = TensorData(inputs, torch.zeros(6000, dtype=torch.long))
    class Unreached(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the forward pass went on past the last layer to fit")

    network = torch.nn.Sequential(PatchWhitening(3, 2, 1), Unreached())
    assert fit_layers_to_data(network, data, torch.device("cpu"), seed=0)
    assert not fit_layers_to_data(torch.nn.Sequential(torch.nn.Identity()), data, torch.device("cpu"), seed=0)
    # fitted on the faint first rows alone, every filter would be about 95 long; rows from both halves give ~1.3
    assert network[0].weight.flatten(1).norm(dim=1).max() < 5


def test_conv_pool_pools_before_the_norm_and_names_a_pool_too_large():
    block, shape = build_blocks([{"conv": {"channels": 4, "padding": "same", "pool": 2, "batch_norm": True}}],
                                (3, 9, 9), "model.blocks")
    assert shape == (4, 4, 4) and list(dict(block[0].named_children())) == ["conv", "pool", "bn", "act"]
    with pytest.raises(CnncliError, match=r"model.blocks\[0\].conv.pool"):
        build_blocks([{"conv": {"channels": 4, "pool": 4}}], (3, 5, 5), "model.blocks")


def test_a_network_trained_on_mirror_images_averages_the_picture_and_its_mirror_when_it_predicts():
    from cnncli.modalities.image import ImageAugment, ImageModality, ImageOptions
    from cnncli.nn.model import network_for

    blocks = [{"conv": {"channels": 3, "padding": "same"}}, {"pool": {"type": "max", "size": "global"}}]
    flipping = ImageModality(ImageOptions(size=[6, 6], color="rgb", tta="auto"), ImageAugment(hflip=True))
    network = network_for(flipping, blocks, 2).eval()
    pictures = torch.randint(0, 255, (5, 3, 6, 6), dtype=torch.uint8)
    with torch.no_grad():
        seen = network.stem(pictures)
        expected = 0.5 * (network.head(seen) + network.head(seen.flip(-1)))
        assert torch.allclose(network(pictures), expected, atol=1e-6)
        assert not torch.allclose(network(pictures), network.head(seen), atol=1e-4)
        assert torch.allclose(network.train()(pictures), network.head(seen))  # training sees the picture only
    assert flipping.state_dict()["options"]["tta"] == "flip"  # what the bundle keeps: no auto left to resolve
    still = ImageModality(ImageOptions(size=[6, 6], color="rgb", tta="auto"), ImageAugment(translate=0.1))
    assert network_for(still, blocks, 2).views is None and still.state_dict()["options"]["tta"] == "none"
    rebuilt = ImageModality.from_state(flipping.state_dict())
    assert network_for(rebuilt, blocks, 2).views is not None  # predict rebuilds the same views


def test_flip_shift_views_also_score_both_pictures_shifted_a_pixel():
    import torch.nn.functional as F

    from cnncli.modalities.image import ImageModality, ImageOptions
    from cnncli.nn.model import network_for

    blocks = [{"conv": {"channels": 3, "padding": "same"}}, {"pool": {"type": "max", "size": "global"}}]
    shifting = ImageModality(ImageOptions(size=[6, 6], color="rgb", tta="flip-shift"))
    assert shifting.state_dict()["options"]["tta"] == "flip-shift"
    network = network_for(shifting, blocks, 2).eval()
    pictures = torch.randint(0, 255, (5, 3, 6, 6), dtype=torch.uint8)
    with torch.no_grad():
        seen = network.stem(pictures)
        padded = F.pad(seen, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :6, :6], padded[..., 2:, 2:]
        assert not torch.equal(up_left, seen) and not torch.equal(down_right, seen)

        def both(views):
            return 0.5 * (network.head(views) + network.head(views.flip(-1)))

        expected = 0.5 * both(seen) + 0.25 * both(up_left) + 0.25 * both(down_right)
        assert torch.allclose(network(pictures), expected, atol=1e-6)
        assert not torch.allclose(network(pictures), both(seen), atol=1e-4)
    rebuilt = ImageModality.from_state(shifting.state_dict())
    assert network_for(rebuilt, blocks, 2).views.shifts  # predict rebuilds the same views


@pytest.mark.parametrize("tta", ["flip", "flip-shift"])
def test_a_network_with_mirror_views_exports_to_onnx_for_any_batch(tta):
    pytest.importorskip("onnxruntime")
    from cnncli.bundle.export import example_inputs, max_difference, onnx_bytes
    from cnncli.modalities.image import ImageModality, ImageOptions
    from cnncli.modalities.image_backbone import ConvGroupShape, conv_group_backbone
    from cnncli.nn.model import network_for

    modality = ImageModality(ImageOptions(size=[16, 16], color="rgb", tta=tta))
    network = network_for(modality, conv_group_backbone(ConvGroupShape(1, 3, 4)), 3).eval()
    content = onnx_bytes(network, example_inputs(modality, 2))
    assert max_difference(content, network, modality) < 1e-4  # batches of 1 and 7, exported with 2
