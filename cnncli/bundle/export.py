"""`cnncli export BUNDLE --format onnx`: a bundle's network for servers that do not run cnncli.

The ONNX graph is the whole network, stem included, from the encoded input (uint8 pixels, a dB
spectrogram, token ids: what the modality's `encode` makes; audio bundles that encode waveforms
start at the dB spectrogram their stem computes, which servers make with their own audio stack) to class probabilities (an
ensemble's averaged, as `cnncli predict` gives them), with a dynamic batch axis. Beside it,
FILE.json says what a server must do to a raw input to get that encoded input (the modality's
`preprocessing()`), and names the labels in output order. Made by PyTorch's own exporter
(torch.onnx, dynamo); onnx, onnxscript and onnxruntime come with the `export` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.bundle.io import Bundle, load_bundle
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.files.lock import writer_lock
from cnncli.registry import Registry

EXPORT_FORMATS = Registry("export format", "--format")
INPUT_NAME, OUTPUT_NAME = "input", "probabilities"


class Probabilities(nn.Module):
    """The network followed by softmax: what cnncli's predictions are made of."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(inputs), dim=1)


def export_bundle(path: str | Path, out: str | Path | None = None, form: str = "onnx") -> dict:
    """Write the bundle at `path` as `out` (default: BUNDLE.onnx beside the bundle folder) and
    its preprocessing as `out`.json; returns what was written and how well it matches cnncli."""
    exporter = EXPORT_FORMATS.get(form)
    out = Path(out) if out else Path(path).with_name(Path(path).name + f".{form}")
    with writer_lock(out, "--out"):  # one writer per file (cnncli.files.lock)
        return exporter(load_bundle(path), out)


def example_inputs(modality: Any, count: int, seed: int = 0) -> torch.Tensor:
    """`count` encoded inputs of the right type with valid values (random pixels or
    spectrogram values; token ids 0 and 1, which every vocabulary has: padding and unknown)."""
    generator = torch.Generator().manual_seed(seed)
    shape, dtype = (count, *modality.export_shape), modality.input_dtype
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    high = 256 if dtype == torch.uint8 else 2
    return torch.randint(0, high, shape, generator=generator, dtype=dtype)


@EXPORT_FORMATS.register("onnx")
def export_onnx(bundle: Bundle, out: Path) -> dict:
    model = Probabilities(bundle.network.cpu()).eval()
    content = onnx_bytes(model, example_inputs(bundle.modality, 2))
    sidecar = out.with_name(out.name + ".json")
    description = {
        "format": "cnncli-onnx", "bundle": str(bundle.path), "modality": bundle.modality.name,
        "input": {"name": INPUT_NAME, "dtype": str(bundle.modality.input_dtype).removeprefix("torch."),
                  "shape": ["batch", *bundle.modality.export_shape]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(bundle.labels)],
                   "meaning": "class probabilities, in the order of labels (an ensemble's averaged)"},
        "labels": bundle.labels, "members": bundle.info.get("members", 1),
        "preprocessing": bundle.modality.preprocessing(),
    }
    write_file(out, content)
    write_file(sidecar, (json.dumps(description, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return {"onnx": str(out), "sidecar": str(sidecar), "input": description["input"], "labels": len(bundle.labels),
            "max_difference": max_difference(content, model, bundle.modality)}


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The model as ONNX bytes, batch axis dynamic (the exporter's chatter kept off stdout)."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; a clear message if it is missing
    except ImportError:
        raise CnncliError("export: needs the export extra (onnx, onnxscript, onnxruntime): "
                          "pip install 'cnncli[export]'") from None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
    return program.model_proto.SerializeToString()


def max_difference(content: bytes, model: nn.Module, modality: Any) -> float | None:
    """The largest gap between onnxruntime's and cnncli's probabilities on a few example inputs
    (batches of 1 and 7); None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    gap = 0.0
    with torch.no_grad():
        for count in (1, 7):
            inputs = example_inputs(modality, count, seed=count)
            theirs = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
            gap = max(gap, float((torch.from_numpy(theirs) - model(inputs)).abs().max()))
    return gap
