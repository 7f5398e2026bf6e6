"""Pretrained weights for a named backbone (`model.pretrained`), read without pickle.

Three forms: a .safetensors file; a folder in the Hugging Face hub's layout (model.safetensors,
and config.json whose `pretrained_cfg` gives the mean, std and input size the weights were
trained with); or `hf-hub:ORG/NAME`, fetched by huggingface_hub into the user's cache when
online and read from that cache when not. Pickled checkpoints (.bin, .pth, .pt, .ckpt) are
refused: loading one can run any code.

The tensors are fitted to the network (`fit_tensors`), as they are when a run starts from a
bundle (model.init): a first convolution made for another number of input channels is adapted
the way timm's adapt_input_conv does it (channels summed for one, repeated and scaled for more),
and any other difference is one line naming the layer and both shapes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load
from torch import nn

from cnncli.errors import CnncliError
from cnncli.limits import MAX_PARAMETERS, MAX_RECIPE_BYTES
from cnncli.nn.backbones import INSTALL_HINT, import_timm

HUB_PREFIX = "hf-hub:"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".tar")
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + MAX_RECIPE_BYTES  # float64 at the parameter limit, and a header


def check_weights_source(pretrained: str | None, init: str | None, backbone: str | None) -> None:
    """What can be told of model.pretrained from the recipe alone (the files are read by training)."""
    if pretrained is None:
        return
    if init:
        raise CnncliError("model.pretrained: a run starts from pretrained weights or from a bundle (model.init), "
                          "not both")
    if not backbone:
        raise CnncliError("model.pretrained: needs model.backbone, the timm architecture the weights are for "
                          "(e.g. resnet18)")
    if pretrained.startswith(HUB_PREFIX):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", pretrained[len(HUB_PREFIX):]):
            raise CnncliError(f"model.pretrained: {pretrained}: expected hf-hub:ORG/NAME "
                              "(e.g. hf-hub:timm/resnet18.a1_in1k)")
    elif Path(pretrained).suffix.lower() in PICKLE_SUFFIXES:
        raise CnncliError(f"model.pretrained: {pretrained}: a pickled checkpoint, which can run code when loaded; "
                          "give the weights as safetensors (safetensors.torch.save_file(state_dict, "
                          "'model.safetensors'), or the hub's model.safetensors)")


@dataclass
class Pretrained:
    """Weights read from model.pretrained, and what the bundle records of them."""

    origin: str  # as the recipe gives it
    file: Path  # the safetensors file read
    sha256: str
    tensors: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)  # mean, std, input_size the weights expect

    def record(self) -> dict:
        return {"pretrained": self.origin, "file": str(self.file), "sha256": self.sha256,
                "preprocessing": self.preprocessing}


def read_pretrained(origin: str, backbone: str) -> Pretrained:
    """The weights model.pretrained names, for the timm architecture `backbone`."""
    if origin.startswith(HUB_PREFIX):
        weights_file, config_file = _from_hub(origin)
    else:
        path = Path(origin).expanduser()
        if path.is_dir():
            weights_file, config_file = path / WEIGHTS_NAME, path / CONFIG_NAME
            if not weights_file.is_file():
                raise CnncliError(f"model.pretrained: {path}: holds no {WEIGHTS_NAME} (a folder in the hub's "
                                  f"layout holds {WEIGHTS_NAME} and {CONFIG_NAME})")
        elif path.is_file() and path.suffix.lower() == ".safetensors":
            weights_file, config_file = path, None
        else:
            what = "no such file or folder" if not path.exists() else "not a .safetensors file"
            raise CnncliError(f"model.pretrained: {origin}: {what}; expected a .safetensors file, a folder "
                              f"holding {WEIGHTS_NAME} and {CONFIG_NAME}, or hf-hub:ORG/NAME")
    preprocessing = _preprocessing(config_file, backbone, origin)
    content = _read_limited(weights_file)
    try:
        tensors = load(content)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CnncliError(f"model.pretrained: {weights_file}: not readable as safetensors "
                          f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    return Pretrained(origin, weights_file, hashlib.sha256(content).hexdigest(), tensors, preprocessing)


def _read_limited(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise CnncliError(f"model.pretrained: {path}: larger than {MAX_WEIGHTS_BYTES:,} bytes")
        return path.read_bytes()
    except OSError as error:
        raise CnncliError(f"model.pretrained: {path}: unreadable ({error.strerror})") from None


def _preprocessing(config_file: Path | None, backbone: str, origin: str) -> dict:
    """The mean, std and input size the weights expect: config.json's pretrained_cfg where there is
    one, timm's default for the architecture otherwise."""
    if config_file is not None and config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            settings = config.get("pretrained_cfg") or {}
            architecture = config.get("architecture")
        except (OSError, ValueError, AttributeError):
            raise CnncliError(f"model.pretrained: {config_file}: not a readable config.json") from None
        if isinstance(architecture, str) and architecture.split(".")[0] != backbone.split(".")[0]:
            raise CnncliError(f"model.pretrained: {origin}: weights for {architecture} (its {CONFIG_NAME}); "
                              f"model.backbone is {backbone}")
    else:
        defaults = import_timm().models.get_pretrained_cfg(backbone)
        settings = defaults.to_dict() if defaults is not None else {}
    return {key: list(settings[key]) for key in ("mean", "std", "input_size") if _numbers(settings.get(key))}


def _numbers(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(number, (int, float)) and math.isfinite(number) for number in value)


def _from_hub(origin: str) -> tuple[Path, Path | None]:
    """model.safetensors (and config.json, when the repository has one) of hf-hub:ORG/NAME, from
    the user's cache or the hub. HF_HUB_OFFLINE and HF_HUB_CACHE are read as the run starts."""
    repo = origin[len(HUB_PREFIX):]
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise CnncliError(f"model.pretrained: {origin}: the hub needs huggingface_hub; {INSTALL_HINT}") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        weights = Path(hf_hub_download(repo, WEIGHTS_NAME, cache_dir=cache, local_files_only=offline))
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise CnncliError(f"model.pretrained: {origin}: not in the Hugging Face cache ({cache}) and {reason}; "
                          f"get {WEIGHTS_NAME} and {CONFIG_NAME} from https://huggingface.co/{repo}/tree/main into "
                          "a folder and set model.pretrained to that folder") from None
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise CnncliError(f"model.pretrained: {origin}: no {WEIGHTS_NAME} there ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else 'not found'})") from None
    try:
        config = Path(hf_hub_download(repo, CONFIG_NAME, cache_dir=cache, local_files_only=offline))
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        config = None  # timm's defaults for the architecture
    return weights, config


def load_pretrained(backbone: nn.Module, weights: Pretrained) -> list[str]:
    """Copy `weights` into a timm backbone (cnncli.nn.backbones.TimmBackbone), its classifier's tensors
    left out (ours replaces it); notes on what was adapted."""
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{name}." for name in ([classifier] if isinstance(classifier, str) else classifier))
    given = {name: tensor for name, tensor in weights.tensors.items() if not name.startswith(prefixes)}
    fitted, notes = fit_tensors(backbone.model.state_dict(), given, f"model.pretrained: {weights.origin}",
                                first_convolution(backbone.model))
    backbone.model.load_state_dict(fitted, strict=False)
    return notes


# ---------------------------------------------------------------------------------------------
# Fitting tensors to a network


def fit_tensors(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], where: str,
                first_convolution: str | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`given` tensors for a module whose state is `expected` (same names), and notes on what was
    adapted: the weight `first_convolution` made for another number of input channels is adapted;
    a missing batch-norm step count starts at zero; anything else missing, left over or of another
    shape is one CnncliError naming `where`, the layer and both shapes."""
    fitted, notes = {}, []
    for name, tensor in expected.items():
        if name not in given:
            if name.endswith("num_batches_tracked"):
                continue
            raise CnncliError(f"{where}: has no tensor {name} (shape {list(tensor.shape)} in this network); "
                              "weights of another architecture?")
        source = given[name]
        if name == first_convolution and _channels_differ(source, tensor):
            notes.append(f"{name}: made for {source.shape[1]} input channel(s), adapted to {tensor.shape[1]} "
                         "(as timm's adapt_input_conv)")
            source = adapt_input_channels(source, tensor.shape[1])
        if tuple(source.shape) != tuple(tensor.shape):
            raise CnncliError(f"{where}: layer {name} has shape {list(source.shape)} there; this network's is "
                              f"{list(tensor.shape)}")
        fitted[name] = source.to(tensor.dtype)
    unexpected = sorted(set(given) - set(expected))
    if unexpected:
        raise CnncliError(f"{where}: holds a tensor {unexpected[0]} this network has no place for; weights of "
                          "another architecture?")
    return fitted, notes


def _channels_differ(source: torch.Tensor, target: torch.Tensor) -> bool:
    return source.dim() == target.dim() == 4 and source.shape[0] == target.shape[0] and \
        source.shape[2:] == target.shape[2:] and source.shape[1] != target.shape[1]


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A convolution's (out, in, kh, kw) weight for `channels` inputs, as timm's adapt_input_conv
    does: one channel reads the sum of the weights for all, more channels repeat them, scaled by
    in / channels so that the response to a gray picture stays the same."""
    original = weight.shape[1]
    if channels == 1:
        return weight.float().sum(dim=1, keepdim=True).to(weight.dtype)
    repeats = math.ceil(channels / original)
    return (weight.float().repeat(1, repeats, 1, 1)[:, :channels] * (original / channels)).to(weight.dtype)


def first_convolution(module: nn.Module) -> str | None:
    """The state name of the weight of the first convolution in `module` (the one that reads the picture)."""
    return next((f"{name}.weight" for name, layer in module.named_modules() if isinstance(layer, nn.Conv2d)), None)
