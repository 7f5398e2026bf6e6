"""Hand-written PyTorch reference for recipes/mr.yaml and recipes/sst2.yaml: Kim (2014) CNN-rand (no cnncli import).

Kim's clean_str tokenizer (Unicode-aware), a vocabulary of every training token (most frequent
first; id 0 padding, id 1 unknown), sentences cropped / padded to 56 tokens, embeddings drawn
from U(-0.25, 0.25) and learned, optional dropout on the embedding picture, convolutions over 3,
4 and 5 words x the whole embedding (100 each, ReLU, max over time; with `pad`, k - 1 zero rows
before and after the sentence, as Kim's code pads), dropout 0.5, a linear layer whose per-class
weight rows are renormed to L2 <= 3 after every step, Adam (fused), the best epoch on
validation kept, the test split touched once. An ensemble trains its members one after another
from seeds seed, seed + 1000, ... and averages their softmax outputs. Training batches may see a random span of each
sentence (word crop) and some words replaced by the unknown id (word dropout), and are cut to
their longest sentence plus the widest filter (the padding beyond cannot change max over time). The per-task
settings below are copied from the recipes; tests/test_bench.py checks they still agree.

Splits: MR (Latin-1 rt-polarity.pos / .neg): line i % 10 == 0 of each file is test. SST-2: the
standard train / dev / test files. A task with `rotate` is a cross-validation ensemble, as
cnncli's train.rotate_val: train (+ dev) is dealt into ten seeded stratified folds and member i
keeps its best epoch on fold i and trains on the others; otherwise validation is a seeded
stratified 10% of MR's training lines, or SST-2's dev file.

    python bench/reference/kim_cnn.py --task mr|sst2 [--seed 0] [--threads 2] [--steps N]

Prints one JSON line: accuracy, seconds (fit and total), sentences per second, parameters.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MAX_LENGTH, WIDTHS, FILTERS, MAX_NORM = 56, (3, 4, 5), 100, 3.0
FOLDS = 10  # rotating validation folds of 10% each (cnncli: split.val_fraction 0.1)
TASKS = {
    "mr": dict(dimension=128, input_dropout=0.3, epochs=7, batch=50, lr=0.001, word_crop=0.5, word_dropout=0.5,
               members=5, rotate=True, pad=False),
    "sst2": dict(dimension=64, input_dropout=0.3, epochs=10, batch=50, lr=0.0005, word_crop=0.5, word_dropout=0.3,
                 members=5, rotate=True, pad=True),
}


def clean_words(text: str) -> list[str]:
    """Kim's clean_str (CNN_sentence/process_data.py), lower-cased."""
    text = re.sub(r"[^\w(),!?'`]|_", " ", text.lower())
    text = re.sub(r"(n't|'s|'ve|'re|'d|'ll)\b", r" \1", text)
    text = re.sub(r"([(),!?])", r" \1 ", text)
    return text.split()


def read_lines(path: Path, encoding: str) -> list[str]:
    lines = (line.decode(encoding).strip() for line in path.read_bytes().splitlines())
    return [line for line in lines if line]


def stratified_val(samples: list, fraction: float, seed: int):
    """Hold out `fraction` of each label by a seeded shuffle (labels in sorted order); order kept."""
    by_label: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(samples):
        by_label.setdefault(label, []).append(index)
    generator, held = random.Random(seed), set()
    for label in sorted(by_label):
        indices = by_label[label]
        generator.shuffle(indices)
        held.update(indices[:min(max(round(len(indices) * fraction), 1), len(indices) - 1)])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def stratified_folds(samples: list, count: int, seed: int) -> list[int]:
    """A fold for each sample: each label's samples shuffled (seeded, labels in sorted order) and dealt round-robin."""
    by_label: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(samples):
        by_label.setdefault(label, []).append(index)
    generator, folds = random.Random(seed), [0] * len(samples)
    for label in sorted(by_label):
        indices = by_label[label]
        generator.shuffle(indices)
        for position, index in enumerate(indices):
            folds[index] = position % count
    return folds


def load_task(task: str, rotate: bool = False, root: Path = SHARED):
    """(train, val, test) lists of (sentence, label); with `rotate`, val is empty and train holds
    all the non-test sentences in file order (SST-2: train, then dev), to be dealt into folds."""
    if task == "mr":
        train, test = [], []
        for name, label in (("rt-polarity.pos", "pos"), ("rt-polarity.neg", "neg")):
            for position, line in enumerate(read_lines(root / "mr" / name, "latin-1")):
                (test if position % 10 == 0 else train).append((line, label))
        train, val = (train, []) if rotate else stratified_val(train, 0.1, seed=1)
        return train, val, test

    def labelled(name):
        return [(text.strip(), label) for label, _, text in
                (line.partition(" ") for line in read_lines(root / "sst2" / name, "utf-8"))]
    train, val, test = labelled("stsa.binary.train"), labelled("stsa.binary.dev"), labelled("stsa.binary.test")
    return (train + val, [], test) if rotate else (train, val, test)


class KimCNN(nn.Module):
    def __init__(self, vocabulary_size: int, classes: int, dimension: int, input_dropout: float = 0.0,
                 pad: bool = False):
        super().__init__()
        self.pad = pad  # Kim's k - 1 zero rows before (and after) a sentence, for each filter height k
        table = (torch.rand(vocabulary_size, dimension) * 2 - 1) * 0.25
        table[0] = 0
        self.embedding = nn.Embedding.from_pretrained(table, freeze=False, padding_idx=0)
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.convs = nn.ModuleList(nn.Conv2d(1, FILTERS, (width, dimension)) for width in WIDTHS)
        self.dropout = nn.Dropout(0.5)
        self.output = nn.Linear(FILTERS * len(WIDTHS), classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        picture = self.input_dropout(self.embedding(ids).unsqueeze(1))  # (N, 1, tokens, dimensions)
        # Each filter spans the whole embedding, so it runs as a 1-d convolution over time with the
        # dimensions as channels (faster on CPUs than the 2-d form; the same numbers).
        rows = picture.squeeze(1).transpose(1, 2)  # (N, dimensions, tokens)
        maps = [F.conv1d(rows, conv.weight.squeeze(1).transpose(1, 2), conv.bias,
                         padding=conv.kernel_size[0] - 1 if self.pad else 0) for conv in self.convs]
        # Max over time as a pooling layer: on ties (padding-only windows) its gradient goes to one
        # position, as cnncli's global max pool sends it; amax would split it among them.
        pooled = [F.adaptive_max_pool1d(F.relu(m), 1).flatten(1) for m in maps]
        return self.output(self.dropout(torch.cat(pooled, dim=1)))


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop the trailing padding columns a training batch does not need: past its longest sentence,
    windows that see only padding all give the same value, so max over time needs just one."""
    longest = int(((ids != 0) * torch.arange(1, ids.shape[1] + 1)).amax())
    return ids[:, :longest + max(WIDTHS)]


def augment(ids: torch.Tensor, settings: dict, generator: torch.Generator) -> torch.Tensor:
    """Word crop (each row keeps a random span of at least 1 - share of its tokens, moved to the
    front), then word dropout (real tokens become the unknown id 1 with probability share)."""
    if settings["word_crop"]:
        rows, width = ids.shape
        lengths = (ids != 0).sum(1)
        keep = (lengths - (torch.rand(rows, generator=generator) * settings["word_crop"] * lengths).floor().long()
                ).clamp(min=1)
        start = (torch.rand(rows, generator=generator) * (lengths - keep + 1)).floor().long().clamp(min=0)
        positions = torch.arange(width).unsqueeze(0)
        ids = ids.gather(1, (start.unsqueeze(1) + positions).clamp(max=width - 1))
        ids = ids.masked_fill(positions >= keep.unsqueeze(1), 0)
    if settings["word_dropout"]:
        drop = torch.rand(ids.shape, generator=generator) < settings["word_dropout"]
        ids = ids.masked_fill(drop & (ids != 0), 1)
    return ids


@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for chunk, targets in zip(x.split(512), y.split(512)):
        logits = model(chunk)
        loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
    return loss / len(y), correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("mr", "sst2"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead (smoke checks)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    settings = TASKS[args.task]

    train, val, test = load_task(args.task, settings.get("rotate", False))
    folds = None
    if settings.get("rotate"):  # a cross-validation ensemble: member i validates on fold i
        folds = torch.tensor(stratified_folds(train, FOLDS, seed=1))
    counts = Counter(token for sentence, _ in train for token in clean_words(sentence))
    vocabulary = {token: position for position, token in
                  enumerate(["<pad>", "<unk>", *(t for t, _ in counts.most_common() if t not in ("<pad>", "<unk>"))])}
    labels = sorted({label for _, label in train})

    def encode(part):
        ids = [[vocabulary.get(token, 1) for token in clean_words(sentence)[:MAX_LENGTH]] for sentence, _ in part]
        x = torch.tensor([row + [0] * (MAX_LENGTH - len(row)) for row in ids], dtype=torch.long)
        return x, torch.tensor([labels.index(label) for _, label in part])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = encode(train), encode(val), encode(test)

    fit_started = time.perf_counter()
    models, seen, train_seconds, steps, best_vals = [], 0, 0.0, 0, []
    for member in range(settings["members"]):
        seed = args.seed + 1000 * member  # cnncli's member seeds
        if folds is None:
            data = x_train, y_train, x_val, y_val
        else:
            held = folds == member % FOLDS
            data = x_train[~held], y_train[~held], x_train[held], y_train[held]
        model, member_seen, member_seconds, steps, best = train_member(
            seed, len(vocabulary), len(labels), settings, *data, args.steps)
        models.append(model)
        seen, train_seconds = seen + member_seen, train_seconds + member_seconds
        best_vals.append(round(best[0], 4))
    fit_seconds = time.perf_counter() - fit_started

    accuracy = ensemble_accuracy(models, x_test, y_test)
    print(json.dumps({
        "accuracy": round(accuracy, 4), "n_test": len(y_test), "steps": steps, "members": len(models),
        "best_val_accuracy": best_vals if len(best_vals) > 1 else best_vals[0],
        "vocabulary": len(vocabulary), "fit_seconds": round(fit_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "images_per_second": round(seen / train_seconds, 1), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in models[0].parameters()), "torch": torch.__version__,
    }))


def train_member(seed, vocabulary_size, classes, settings, x_train, y_train, x_val, y_val, steps=None):
    """One network from `seed`: (model at its best validation epoch, samples seen, seconds, steps, best)."""
    torch.manual_seed(seed)
    model = KimCNN(vocabulary_size, classes, settings["dimension"], settings["input_dropout"], settings["pad"])
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], fused=True)  # ~10x faster steps on CPU
    batch_size = settings["batch"]
    total_steps = steps or settings["epochs"] * math.ceil(len(y_train) / batch_size)

    step, seen, train_seconds, best, best_state = 0, 0, 0.0, None, None
    while step < total_steps:
        model.train()
        epoch_started = time.perf_counter()
        order = torch.randperm(len(y_train), generator=order_generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue
            loss = F.cross_entropy(model(trim_padding(augment(x_train[index], settings, augment_generator))), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.output.weight.data = torch.renorm(model.output.weight.data, 2, 0, MAX_NORM)
            seen += len(index)
            step += 1
            if step >= total_steps:
                break
        train_seconds += time.perf_counter() - epoch_started
        val_loss, val_accuracy = evaluate(model, x_val, y_val)
        if best is None or (val_accuracy, -val_loss) > best:
            best, best_state = (val_accuracy, -val_loss), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, seen, train_seconds, step, best


@torch.no_grad()
def ensemble_accuracy(models, x, y) -> float:
    """Accuracy of the members' averaged softmax (one member: its own accuracy)."""
    for model in models:
        model.eval()
    correct = 0
    for chunk, targets in zip(x.split(512), y.split(512)):
        probabilities = torch.stack([model(chunk).softmax(1) for model in models]).mean(0)
        correct += int((probabilities.argmax(1) == targets).sum())
    return correct / len(y)


if __name__ == "__main__":
    main()
