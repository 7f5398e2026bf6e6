import numpy as np
import pytest
import torch
from PIL import Image

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageAugment, ImageModality, ImageOptions


def save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return Sample(str(path))


def test_colour_photo_of_another_size_is_resized_to_the_recipe(tmp_path):
    photo = save(tmp_path / "wide.jpg", np.full((30, 60, 3), (200, 20, 20), dtype=np.uint8))
    rgb = ImageModality(ImageOptions(size=[16, 16], color="rgb", resize="stretch"))
    encoded = rgb.encode(photo)
    assert encoded.shape == (3, 16, 16) and encoded.dtype == torch.uint8
    assert encoded[0].float().mean() > 150 > encoded[1].float().mean()
    gray = ImageModality(ImageOptions(size=[16, 16], color="grayscale", resize="pad")).encode(photo)
    assert gray.shape == (1, 16, 16)
    assert gray[:, 0].sum() == 0 and gray[:, 8].sum() > 0  # letterboxed: black rows above and below


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((10, 20), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sample = save(tmp_path / "phone.jpg", pixels, exif=exif)
    assert ImageModality(ImageOptions(size=None)).encode(sample).shape == (1, 20, 10)


@pytest.mark.parametrize("content", [b"", b"GIF89a broken", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_image_names_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(CnncliError, match="bad.png: not a readable image"):
        ImageModality(ImageOptions(size=[8, 8])).encode(Sample(str(path)))


def test_normalisation_is_fitted_on_training_pixels_and_applied_by_the_stem():
    images = ImageModality(ImageOptions(size=[4, 4]))
    data = torch.tensor([[[[0] * 4] * 4], [[[255] * 4] * 4]], dtype=torch.uint8)
    images.fit_encoded(data)
    assert images.mean == [0.5] and images.std == [0.5]
    assert images.build_stem()(data).flatten().unique().tolist() == [-1.0, 1.0]


def test_normalisation_from_chunks_matches_every_pixel_at_once():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (50, 3, 7, 5), dtype=torch.uint8, generator=generator)
    pixels[:, 2] //= 4  # channels with different statistics
    images = ImageModality(ImageOptions(size=[7, 5], color="rgb"))
    images.fit_encoded_chunks(pixels.split(16))
    values = pixels.to(torch.float64) / 255
    assert images.mean == pytest.approx(values.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert images.std == pytest.approx(values.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-6)
    assert images.std[2] < images.std[0] / 2


def test_augmentation_moves_pixels_only_when_asked():
    batch = torch.zeros(8, 1, 16, 16, dtype=torch.uint8)
    batch[:, :, 6:10, 6:10] = 255
    generator = torch.Generator().manual_seed(0)
    still = ImageModality(ImageOptions(size=[16, 16])).augment(batch, generator)
    assert torch.equal(still, batch)
    moved = ImageModality(ImageOptions(size=[16, 16]), ImageAugment(shift=0.25, rotate=20)).augment(batch, generator)
    assert moved.shape == batch.shape and not torch.allclose(moved, batch.float())
    assert not torch.allclose(moved[0], moved[1])  # each image gets its own transform
