r"""Hand-written PyTorch reference for recipes/fsdd.yaml: spoken digits as log-mel pictures (no cnncli import).

soundfile decodes, torchaudio resamples (if needed) and computes the mel spectrogram; the rest is
plain torch: mono mix-down, the DC offset removed, centre crop / symmetric zero pad to one second,
power -> dB below each recording's own peak with top_db 80 (librosa.power_to_db(ref=np.max)), per-band mean/std
fitted on the training split. Training batches are augmented as waveforms (speed by resampling,
circular shift, coloured noise at a random SNR) and then as pictures (frequency warp, random
equaliser, SpecAugment masks), blended in pairs (mixup, after the per-band normalisation), a
4-conv BN network, Adam with a cosine schedule, the best epoch
on validation kept, the test split touched once.
With --members N, N such networks train from seeds seed, seed + 1000, ... and their softmax
outputs are averaged (cnncli's train.ensemble).

Split (the FSDD convention): recordings with index 0-4 are the test set; validation is a seeded,
stratified 10% of the rest (Python's random.Random(1) shuffle per digit, as the recipe's split seed 0 gives).
`--test-pattern` replaces the test rule (a regex searched in the file name, as the recipe's
data.split.test_pattern): `^\d_theo_` holds out one speaker.

    python bench/reference/fsdd.py [--seed 0] [--threads 2] [--steps N] [--members N] [--test-pattern REGEX]
                                   [--device cuda]

On a GPU the network, the validation and test pictures and each training batch live there; the
training batches are augmented on the CPU first (as a DataLoader of CPU transforms would), with
the same generators, so a run draws the same random numbers on either device.

Prints one JSON line: accuracy, seconds (fit and total), samples_per_second, parameters.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd" / "recordings"
STANDARD_TEST = r"_[0-4]\.wav$"  # recordings with index 0-4
SAMPLE_RATE, DURATION, N_FFT, HOP, N_MELS, TOP_DB = 8000, 1.0, 256, 64, 24, 80.0
EPOCHS, BATCH, LR = 60, 32, 0.003
TIME_SHIFT, TIME_MASK, FREQ_MASK = 0.1, 12, 6
SPEED, PITCH, EQ_DB, NOISE_SNR, NOISE_PROB = 0.1, 0.0, 20.0, (10.0, 40.0), 0.5
MIXUP, REMOVE_DC = 0.2, True


def list_recordings(folder: Path, test_pattern: str = STANDARD_TEST):
    """(path, digit) for every .wav in sorted order, split into train / val / test."""
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and path.suffix.lower() == ".wav"
             and not path.name.startswith(".")]
    samples = [(path, int(re.match(r"^(\d)_", path.name).group(1))) for path in files]
    test = [s for s in samples if re.search(test_pattern, s[0].name)]
    rest = [s for s in samples if not re.search(test_pattern, s[0].name)]
    by_digit: dict[int, list[int]] = {}
    for index, (_, digit) in enumerate(rest):
        by_digit.setdefault(digit, []).append(index)
    generator, held = random.Random(1), set()
    for digit in sorted(by_digit):
        indices = by_digit[digit]
        generator.shuffle(indices)
        held.update(indices[:min(max(round(len(indices) * 0.1), 1), len(indices) - 1)])
    train = [s for i, s in enumerate(rest) if i not in held]
    val = [s for i, s in enumerate(rest) if i in held]
    return train, val, test


def load_waveforms(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 8000) mono waveforms at 8 kHz, centre-cropped or zero-padded to one second, and (N,) labels."""
    length = round(DURATION * SAMPLE_RATE)
    waveforms = []
    for path, _ in samples:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        wave = torch.from_numpy(np.ascontiguousarray(audio)).mean(dim=1)
        if rate != SAMPLE_RATE:
            wave = torchaudio.functional.resample(wave, rate, SAMPLE_RATE)
        waveforms.append(fit(wave, length, REMOVE_DC))
    return torch.stack(waveforms), torch.tensor([digit for _, digit in samples])


def fit(wave: torch.Tensor, length: int, remove_dc: bool = False) -> torch.Tensor:
    """Centre-crop or zero-pad to `length`; with `remove_dc`, what is kept loses its mean first."""
    if len(wave) > length:
        start = (len(wave) - length) // 2
        wave = wave[start:start + length]
    if remove_dc:
        wave = wave - wave.mean()
    before = (length - len(wave)) // 2
    return F.pad(wave, (before, length - len(wave) - before))


SPECTROGRAM = torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=HOP, power=2.0, center=True,
                                                pad_mode="constant")
MEL = torchaudio.transforms.MelScale(n_mels=N_MELS, sample_rate=SAMPLE_RATE, n_stft=N_FFT // 2 + 1, norm="slaney",
                                     mel_scale="slaney")


@torch.no_grad()
def log_mel(waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, N_MELS, 126) dB below each picture's peak, floored TOP_DB down; with a generator, each
    row's frequency axis is first stretched by up to +-PITCH and shaped by a random equaliser."""
    pictures = []
    for chunk in waves.split(256):
        power = SPECTROGRAM(chunk)
        if generator is not None:
            power = warp_and_equalise(power, generator)
        decibels = 10.0 * torch.log10(MEL(power).clamp(min=1e-10))
        peak = decibels.amax(dim=(-2, -1), keepdim=True)
        pictures.append(torch.maximum(decibels, peak - TOP_DB) - peak)
    return torch.cat(pictures).unsqueeze(1)


def warp_and_equalise(power: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    count, bins, frames = power.shape
    if PITCH:
        factors = 1 + PITCH * (2 * torch.rand(count, generator=generator) - 1)
        warped = torch.zeros_like(power)
        for row in range(count):  # content at bin k moves to bin k * factor (linear interpolation)
            source = torch.arange(bins) / factors[row]
            low = source.floor().long().clamp(max=bins - 1)
            high = (low + 1).clamp(max=bins - 1)
            weight = (source - source.floor()).view(-1, 1)
            row_power = power[row, low] * (1 - weight) + power[row, high] * weight
            warped[row] = torch.where((source <= bins - 1).view(-1, 1), row_power, 0.0)
        power = warped
    if EQ_DB:  # three cosines over the band, amplitudes 1, 1/2, 1/3 at most, scaled to EQ_DB
        orders = torch.tensor([1.0, 2.0, 3.0])
        amplitudes = (2 * torch.rand(count, 3, generator=generator) - 1) / orders
        phases = 2 * math.pi * torch.rand(count, 3, generator=generator)
        position = torch.linspace(0, 1, bins).view(1, -1, 1)
        curve = (amplitudes.unsqueeze(1) * torch.cos(math.pi * orders * position + phases.unsqueeze(1))).sum(2)
        power = power * 10 ** (EQ_DB / float((1 / orders).sum()) * curve / 10).unsqueeze(2)
    return power


def build_model() -> nn.Sequential:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(
        *block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Dropout(0.3), nn.Flatten(), nn.Linear(128, 10))


def stripes(count: int, widest: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, size) bool: one masked stripe per row, width uniform in [0, widest]."""
    widest = min(widest, size)
    width = (torch.rand(count, generator=generator) * (widest + 1)).floor().long()
    start = (torch.rand(count, generator=generator) * (size - width + 1)).floor().long()
    positions = torch.arange(size).view(1, -1)
    return (positions >= start.view(-1, 1)) & (positions < (start + width).view(-1, 1))


def speech_power(waves: torch.Tensor) -> torch.Tensor:
    """(N,) mean power of the 16 ms frames within 30 dB of each row's loudest frame."""
    frame = round(0.016 * SAMPLE_RATE)
    energy = waves[:, :waves.shape[1] // frame * frame].reshape(len(waves), -1, frame).pow(2).mean(2)
    active = energy >= energy.amax(1, keepdim=True) * 1e-3
    return (energy * active).sum(1) / active.sum(1)


def augment_waves(waves: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Speed (resampling, +-SPEED), circular shift (+-TIME_SHIFT), coloured noise at an SNR in
    NOISE_SNR for a NOISE_PROB share of the rows."""
    count, length = waves.shape
    out = waves.clone()
    if SPEED:
        factors = 1 + SPEED * (2 * torch.rand(count, generator=generator) - 1)
        for row in range(count):  # faster by f: resample from f x the rate, centred, same length
            source = round(float(factors[row]) * 100)  # factors to 1%
            out[row] = fit(torchaudio.functional.resample(waves[row], source, 100), length)
    widest = TIME_SHIFT * length
    shifts = (-widest + 2 * widest * torch.rand(count, generator=generator)).round().long()
    out = torch.stack([row.roll(int(shift)) for row, shift in zip(out, shifts)])
    if NOISE_SNR:
        low, high = NOISE_SNR
        snr = low + (high - low) * torch.rand(count, generator=generator)
        chosen = torch.rand(count, generator=generator) < NOISE_PROB
        slopes = 2 * torch.rand(count, generator=generator)  # white (0) to brown (2)
        spectrum = torch.fft.rfft(torch.randn(count, length, generator=generator))
        shape = torch.arange(spectrum.shape[1]).clamp(min=1).float().view(1, -1) ** (-slopes.view(-1, 1) / 2)
        shape[:, 0] = 0
        noise = torch.fft.irfft(spectrum * shape, n=length)
        noise *= (speech_power(out) / 10 ** (snr / 10) / noise.pow(2).mean(1)).sqrt().view(-1, 1)
        out = torch.where(chosen.view(-1, 1), out + noise, out)
    return out


def augment(waves: torch.Tensor, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Waveform augmentation, the log-mel pictures (pitch, equaliser), a frequency and a time mask
    filled with the band mean."""
    batch = log_mel(augment_waves(waves, generator), generator)
    count, _, bands, frames = batch.shape
    fill = mean.expand(count, 1, bands, frames)
    batch = torch.where(stripes(count, FREQ_MASK, bands, generator).view(count, 1, bands, 1), fill, batch)
    batch = torch.where(stripes(count, TIME_MASK, frames, generator).view(count, 1, 1, frames), fill, batch)
    return batch


@torch.no_grad()
def evaluate(model, x, y, mean, std) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for chunk, targets in zip(x.split(512), y.split(512)):
        logits = model((chunk - mean) / std)
        loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
    return loss / len(y), correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=RECORDINGS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead (smoke checks)")
    parser.add_argument("--members", type=int, default=1, help="ensemble size (recipes/fsdd-best.yaml: 5)")
    parser.add_argument("--test-pattern", default=STANDARD_TEST,
                        help="regex searched in the file name: matches are the test set (default: index 0-4)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    train, val, test = list_recordings(args.folder, args.test_pattern)
    (w_train, y_train), (w_val, y_val), (w_test, y_test) = (load_waveforms(part) for part in (train, val, test))
    x_val, x_test = log_mel(w_val), log_mel(w_test)
    values = log_mel(w_train).to(torch.float64)
    band_mean = values.mean(dim=(0, 1, 3))
    band_std = ((values ** 2).mean(dim=(0, 1, 3)) - band_mean ** 2).clamp(min=1e-8).sqrt()
    mean = torch.tensor([round(float(m), 6) for m in band_mean]).view(1, 1, -1, 1)
    std = torch.tensor([round(float(s), 6) for s in band_std]).view(1, 1, -1, 1)
    x_val, y_val, x_test, y_test = (part.to(device) for part in (x_val, y_val, x_test, y_test))

    fit_started = time.perf_counter()
    models, seen, train_seconds, steps, best_vals = [], 0, 0.0, 0, []
    for member in range(args.members):
        model, member_seen, member_seconds, steps, best = train_member(
            args.seed + 1000 * member, (w_train, y_train), (x_val, y_val), mean, std, args.steps, device)  # cnncli's seeds
        models.append(model)
        seen, train_seconds = seen + member_seen, train_seconds + member_seconds
        best_vals.append(round(best[0], 4))
    fit_seconds = time.perf_counter() - fit_started

    accuracy = ensemble_accuracy(models, x_test, y_test, mean.to(device), std.to(device))
    print(json.dumps({
        "accuracy": round(accuracy, 4), "n_test": len(y_test), "steps": steps, "members": len(models),
        "best_val_accuracy": best_vals if len(best_vals) > 1 else best_vals[0],
        "fit_seconds": round(fit_seconds, 2), "total_seconds": round(time.perf_counter() - started, 2),
        "images_per_second": round(seen / train_seconds, 1), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in models[0].parameters()), "torch": torch.__version__,
        "device": str(device),
    }))


def train_member(seed, train, val, mean, std, steps=None, device=torch.device("cpu")):
    """One network from `seed`: (model at its best validation epoch, samples seen, seconds, steps, best)."""
    (w_train, y_train), (x_val, y_val) = train, val
    on_device = (y_train.to(device), mean.to(device), std.to(device))
    torch.manual_seed(seed)
    model = build_model().to(device)
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)  # as cnncli steps Adam
    total_steps = steps or EPOCHS * math.ceil(len(y_train) / BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))

    step, seen, train_seconds, best, best_state = 0, 0, 0.0, None, None
    while step < total_steps:
        model.train()
        epoch_started = time.perf_counter()
        order = torch.randperm(len(y_train), generator=order_generator)
        for start in range(0, len(order), BATCH):
            index = order[start:start + BATCH]
            if len(index) < 2:
                continue
            batch = augment(w_train[index], mean, augment_generator).to(device, non_blocking=True)
            targets, device_mean, device_std = on_device
            targets = targets[index.to(device)]
            pictures = (batch - device_mean) / device_std
            if MIXUP:  # one Beta(MIXUP, MIXUP) weight per batch (numpy, seeded from the stream); a shuffle
                weight = float(np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=augment_generator)))
                               .beta(MIXUP, MIXUP))
                order = torch.randperm(len(index), generator=augment_generator).to(device)
                logits = model(weight * pictures + (1 - weight) * pictures[order])
                loss = weight * F.cross_entropy(logits, targets) + (1 - weight) * F.cross_entropy(logits, targets[order])
            else:
                loss = F.cross_entropy(model(pictures), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(index)
            step += 1
            if step >= total_steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - epoch_started
        val_loss, val_accuracy = evaluate(model, x_val, y_val, on_device[1], on_device[2])
        if best is None or (val_accuracy, -val_loss) > best:
            best, best_state = (val_accuracy, -val_loss), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, seen, train_seconds, step, best


@torch.no_grad()
def ensemble_accuracy(models, x, y, mean, std) -> float:
    """Accuracy of the members' averaged softmax (one member: its own accuracy)."""
    for model in models:
        model.eval()
    correct = 0
    for chunk, targets in zip(x.split(512), y.split(512)):
        pictures = (chunk - mean) / std
        probabilities = torch.stack([model(pictures).softmax(1) for model in models]).mean(0)
        correct += int((probabilities.argmax(1) == targets).sum())
    return correct / len(y)


if __name__ == "__main__":
    main()
