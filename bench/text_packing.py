"""Kim's text network with its sentences packed end to end, against the same network unpacked.

One thread. Batches of random SST and MR sentences cut as `cnncli serve` cuts them (9 to 64),
and predict's length-sorted batches (64 and 256): milliseconds a batch, best of three passes over
the same batches, and how many rows the packed form has against the batch's places (its padding
skipped). The packed module runs unpacked above RowProduct.LARGE places; here both forms are
timed on every batch (cnncli/modalities/text/packed.py).

    python bench/text_packing.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict import REPO, sentences, train_bundle  # noqa: E402  (bench/predict.py)


def main() -> None:
    from cnncli.bundle.io import load_bundle
    from cnncli.data.sample import Sample
    from cnncli.modalities.text.packed import PackedSentences
    from cnncli.nn.inference import for_inference

    torch.set_num_threads(1)
    bundle = load_bundle(train_bundle("text", REPO / "runs" / "bench-serve" / "bundles" / "text"))
    network = for_inference(bundle.network, torch.device("cpu"))
    packed = network.stem
    assert isinstance(packed, PackedSentences), "the bench's text bundle is Kim's network"
    forms = {"packed": lambda ids: network.classifier(packed.packed(ids)),
             "unpacked": lambda ids: network.classifier(packed.unpacked(ids))}
    random.seed(0)
    encoded = bundle.modality.encode_many([Sample("sentence", content=text) for text in sentences()[:20_000]]).tensor

    def served(count: int) -> list[torch.Tensor]:
        picks = [torch.tensor(random.sample(range(len(encoded)), count)) for _ in range(60)]
        return [next(iter(bundle.modality.inference_batches(encoded[rows], 64)))[1] for rows in picks]

    def predicted(count: int) -> list[torch.Tensor]:
        start = random.randrange(len(encoded) - 4_000)
        return [batch for _, batch in bundle.modality.inference_batches(encoded[start:start + 4_000], count)][:30]

    for label, batches in (("serve, 9 sentences", served(9)), ("serve, 18", served(18)), ("serve, 32", served(32)),
                           ("serve, 64", served(64)), ("predict, 64", predicted(64)), ("predict, 256", predicted(256))):
        times: dict[str, list[float]] = {}
        with torch.inference_mode():
            for name, form in list(forms.items()) * 3:
                started = time.perf_counter()
                for batch in batches:
                    form(batch)
                times.setdefault(name, []).append((time.perf_counter() - started) / len(batches) * 1e3)
        places = sum(batch.numel() for batch in batches)
        rows = sum(int(((batch != 0).sum(1) + packed.margin).sum()) for batch in batches)
        print(f"{label}: {places / len(batches):.0f} places a batch, packed rows {rows / places:.2f} of them; "
              + ", ".join(f"{name} {min(values):.2f} ms" for name, values in times.items()), flush=True)


if __name__ == "__main__":
    main()
