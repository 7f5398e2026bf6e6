"""On a CUDA GPU, what only a GPU run exercises: data, network and loss on the device (channels
last, pinned-memory copies from streaming workers), bf16 and fp16 autocast, bundles trained there
and used on a CPU. Skipped without CUDA; on a GPU machine:
`python -m pytest -q -p no:cacheprovider tests/test_gpu.py` (bench/gpu_run.sh runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_image_recipe, write_two_class_images

from cnncli.bundle.io import load_bundle
from cnncli.data.sample import Sample
from cnncli.nn.adaptation import adapted_to, batch_norms
from cnncli.recipe.config import load_config
from cnncli.runtime.device import channels_last_helps, pick_precision
from cnncli.training.train import train
from cnncli.verbs.predict import predict

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture
def exact_float32():
    """Float32 convolutions and matrix products without TF32 (which keeps 10 mantissa bits), so a
    GPU's float32 results can be held to a CPU's within float32 rounding; restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def recipe(images: Path, device: str, **train_settings) -> dict:
    """A batch-normed conv net and an FC layer (no dropout: its masks come from each device's own
    generator), trained for a few epochs with plain SGD."""
    settings = tiny_image_recipe(images, device=device, epochs=3, optimizer="sgd", lr=0.05, **train_settings)
    settings["model"]["blocks"] = [{"conv": {"channels": 6, "kernel": 3, "batch_norm": True}},
                                   {"pool": {"type": "max", "size": 2}},
                                   {"linear": {"features": 8, "batch_norm": True}}]
    return settings


def test_float32_on_the_gpu_trains_the_weights_a_cpu_trains(exact_float32, tmp_path):
    """In memory on the GPU, and streamed there (data.in_memory: false: batches from worker
    processes through pinned memory), as in memory on a CPU, within float32 rounding."""
    images = write_two_class_images(tmp_path / "images", count=12)
    runs = {name: recipe(images, name.split("-")[0], precision="fp32") for name in ("cpu", "cuda", "cuda-streamed")}
    runs["cuda-streamed"]["data"].update(in_memory=False, workers=1)
    outcomes = {name: train(load_config(settings), tmp_path / name, cache=None) for name, settings in runs.items()}
    assert outcomes["cuda"].training["device"].startswith("cuda")
    assert outcomes["cuda"].training["precision"] == "fp32"
    assert outcomes["cuda-streamed"].training["in_memory"] is False
    on_cpu = load_bundle(tmp_path / "cpu").network.state_dict()
    for name in ("cuda", "cuda-streamed"):
        for key, weight in load_bundle(tmp_path / name).network.state_dict().items():
            torch.testing.assert_close(weight, on_cpu[key], rtol=1e-3, atol=1e-4, msg=f"{name}: {key}")
        for before, after in zip(outcomes["cpu"].history, outcomes[name].history, strict=True):
            assert after["train_loss"] == pytest.approx(before["train_loss"], rel=1e-3, abs=1e-4), name


def test_auto_precision_and_layout_on_the_gpu():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert pick_precision("auto", CUDA).name == expected
    assert channels_last_helps(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), CUDA)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_the_gpu_learns_with_float32_weights(precision, tiny_image_folder, tmp_path):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    settings = recipe(tiny_image_folder, "cuda", precision=precision)
    settings["train"].update(epochs=8, optimizer="adam", lr=0.01)
    settings["data"]["split"] = {"val_fraction": 0.25}
    outcome = train(load_config(settings), tmp_path / precision, cache=None)
    assert outcome.training["precision"] == precision
    losses = [record["train_loss"] for record in outcome.history]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < 0.7 * losses[0], losses
    tensors = load_bundle(tmp_path / precision).network.state_dict()
    floating = [t for t in tensors.values() if t.is_floating_point()]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floating)


def test_a_bundle_trained_on_the_gpu_predicts_alike_on_a_cpu(exact_float32, tiny_image_folder, tmp_path):
    """The bundle written from a channels-last network on the GPU loads and predicts on a CPU;
    on the GPU, worker processes decode and the parent alone runs the network."""
    settings = recipe(tiny_image_folder, "cuda")
    settings["train"].update(epochs=6, optimizer="adam", lr=0.01)
    train(load_config(settings), tmp_path / "bundle", cache=None)
    files = sorted(str(path) for path in tiny_image_folder.rglob("*.png"))
    on_cpu = list(predict(load_bundle(tmp_path / "bundle"), files, device=torch.device("cpu"), workers=0))
    on_gpu = list(predict(load_bundle(tmp_path / "bundle"), files, device=CUDA, workers=0))
    with_workers = list(predict(load_bundle(tmp_path / "bundle"), files, device=CUDA, workers=2, chunk_size=8))
    assert all(row.error is None for row in on_cpu + on_gpu + with_workers)
    assert [row.label for row in on_gpu] == [row.label for row in on_cpu] == [row.label for row in with_workers]
    for cpu_row, gpu_row in zip(on_cpu, on_gpu, strict=True):
        assert gpu_row.score == pytest.approx(cpu_row.score, abs=1e-4)
    assert sum(row.label == Path(row.input).parent.name for row in on_cpu) >= 0.8 * len(files)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_audio_features_and_waveform_augmentation_run_on_the_gpu(precision, exact_float32, tmp_path):
    """The waveform stem computes its log-mel pictures on the GPU, in float32 even under fp16
    autocast (powers overflow float16), after speed, noise and equaliser augmentation there;
    the bundle then predicts on a CPU what it predicts on the GPU."""
    sets = ["train.epochs=4", "train.device=cuda", f"train.precision={precision}", "augment.speed=0.1",
            "augment.noise_snr=[10, 30]", "augment.eq_db=10", "augment.time_mask=8"]
    outcome = train(load_config(REPO / "recipes" / "audio-quickstart.yaml", sets), tmp_path / "audio", cache=None)
    losses = [record["train_loss"] for record in outcome.history]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    bundle = load_bundle(tmp_path / "audio")
    files = sorted(str(path) for path in (REPO / "sample_data" / "audio").glob("*.wav"))[:12]
    on_gpu = list(predict(bundle, files, device=CUDA, workers=0))
    on_cpu = list(predict(load_bundle(tmp_path / "audio"), files, device=torch.device("cpu"), workers=0))
    assert [row.error for row in on_gpu] == [None] * len(files)
    for gpu_row, cpu_row in zip(on_gpu, on_cpu, strict=True):
        assert gpu_row.score == pytest.approx(cpu_row.score, abs=1e-3), gpu_row.input


def test_adapting_on_the_gpu_measures_what_the_cpu_measures(exact_float32):
    """--adapt on CUDA: the batch norm statistics measured on the GPU are the CPU's (float32
    rounding), and predict --adapt there labels and scores as on the CPU."""
    bundle = load_bundle(REPO / "tests" / "fixtures" / "bundles-v1" / "image")
    files = sorted(str(path) for path in (REPO / "sample_data" / "images").rglob("*.png"))[:120]
    inputs = bundle.modality.encode_many([Sample(locator=f, label=None, position=0) for f in files]).tensor
    on_cpu = batch_norms(adapted_to(bundle.network, bundle.modality, inputs, torch.device("cpu")))
    on_gpu = batch_norms(adapted_to(bundle.network, bundle.modality, inputs, CUDA))
    for cpu_norm, gpu_norm in zip(on_cpu, on_gpu, strict=True):
        assert torch.allclose(gpu_norm.running_mean.cpu(), cpu_norm.running_mean, atol=1e-4, rtol=1e-4)
        assert torch.allclose(gpu_norm.running_var.cpu(), cpu_norm.running_var, atol=1e-4, rtol=1e-4)
    rows_gpu = list(predict(bundle, files, device=CUDA, workers=0, adapt=True))
    rows_cpu = list(predict(bundle, files, device=torch.device("cpu"), workers=0, adapt=True))
    assert [row.label for row in rows_gpu] == [row.label for row in rows_cpu]
    assert [row.score for row in rows_gpu] == pytest.approx([row.score for row in rows_cpu], abs=1e-3)
