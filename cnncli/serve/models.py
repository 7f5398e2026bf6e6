"""The bundles a server answers for, each under its folder's name, loaded once at start."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from cnncli.bundle.io import Bundle, load_bundle
from cnncli.errors import CnncliError
from cnncli.nn.inference import for_inference
from cnncli.runtime.device import pick_device
from cnncli.verbs.predict import Predictor


@dataclass
class Model:
    """One served bundle: the network as predict runs it, and a lock for Grad-CAM, whose hooks
    and matplotlib drawing must not run twice at once on one network."""

    name: str
    bundle: Bundle
    predictor: Predictor
    explaining: threading.Lock = field(default_factory=threading.Lock)

    @property
    def modality(self):
        return self.bundle.modality

    def info(self) -> dict:
        """What GET /models says of it: enough for a client to send the right inputs and trust the scores."""
        info, modality = self.bundle.info, self.bundle.modality
        return {"name": self.name, "modality": modality.name, "labels": self.bundle.labels,
                "reads": {"files": list(modality.extensions), "sentences": bool(modality.text_samples),
                          "segments": bool(modality.finds_spans)},
                "input_shape": info.get("input_shape"), "preprocessing": modality.preprocessing(),
                "description": modality.describe(), "calibration": info.get("calibration"),
                "metrics": info.get("metrics", {}), "status": info.get("status")}


def load_models(paths: list[Path], max_batch: int, device_name: str = "auto") -> dict[str, Model]:
    """{name: model} for bundle folders, named by their last part (two of one name are an error)."""
    device = pick_device(device_name)
    models: dict[str, Model] = {}
    for path in paths:
        name = Path(path).resolve().name
        if name in models:
            raise CnncliError(f"serve: two bundles are named {name!r} ({models[name].bundle.path} and {path}); "
                              "serve each under a folder of its own name")
        bundle = load_bundle(path)
        predictor = Predictor(bundle, for_inference(bundle.network, device), max_batch, device)
        models[name] = Model(name, bundle, predictor)
    if not models:
        raise CnncliError("serve: give at least one bundle folder")
    return models
