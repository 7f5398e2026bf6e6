"""What a network is made of: the layer table that `inspect` prints and training counts FLOPs from.

The layer table lists, for every layer: type, kernel/stride/padding, output shape, parameters,
connections and receptive field. Connections are counted as LeCun et al. (1998) do: for each
output value, the inputs it is wired to plus its bias (LeNet-5's C1: 156 parameters, 28 x 28 x
156 = 122,304 connections); pooling counts its window, batch norm one per value, activations none.
The receptive field is the input window (height x width) that one output value depends on.
A block with a path beside its main one (`beside`: a residual block's shortcut, a squeeze-and-
excitation gate) has that path counted from the block's input and joined at the sum; a gate's
path (`gate_only`), which only weighs whole channels, is shown with its own field and leaves the
field of the values it scales as the convolutions made it.
A layer of a type not known here (from a block kind registered elsewhere) counts its own
connections if it has a `connections(output_shape)` method, and none otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import nn

from cnncli.nn.backbones import describe_stage, stage_outputs
from cnncli.nn.blocks import Parallel, output_shape
from cnncli.nn.model import members_of


def layer_table(network: nn.Module, input_shape: tuple[int, ...], input_description: str = "") -> dict:
    """Rows describing every leaf layer of `network`, and totals; of the first member for an ensemble."""
    members = members_of(network)
    network = members[0]
    shapes = _leaf_output_shapes(network, input_shape)
    stem_shape = output_shape(network.stem, input_shape, dtype=network.input_dtype)
    rows = [{"name": "input", "type": "input", "detail": input_description,
             "output_shape": list(input_shape), "parameters": 0, "connections": 0, "receptive_field": "1x1"}]
    stem_parameters = sum(p.numel() for p in network.stem.parameters())
    rows.append({"name": "stem", "type": type(network.stem).__name__, "detail": "",
                 "output_shape": list(stem_shape), "parameters": stem_parameters, "connections": 0,
                 "receptive_field": "1x1"})
    field = _Field(stem_shape)
    _walk(network.backbone, "", field, shapes, rows, stem_shape)
    _walk(network.classifier, "classifier", field, shapes, rows, None)
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    total = sum(p.numel() for p in network.parameters())
    return {
        "layers": rows,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "total_connections": sum(row["connections"] for row in rows),
        "members": len(members),
    }


class _Field:
    """Receptive field (rf) and jump (input pixels between neighbouring outputs), per axis."""

    def __init__(self, shape):
        self.input_size = tuple(shape[1:3]) if len(shape) == 3 else (1, 1)
        self.rf, self.jump, self.whole = [1, 1], [1, 1], False

    def copy(self):
        other = _Field((0, *self.input_size))
        other.rf, other.jump, other.whole = list(self.rf), list(self.jump), self.whole
        return other

    def join(self, other):
        """After a sum of this path and `other`: each value depends on both windows."""
        self.rf = [max(mine, theirs) for mine, theirs in zip(self.rf, other.rf)]
        self.whole = self.whole or other.whole

    def step(self, kernel, stride):
        for axis in range(2):
            self.rf[axis] += (kernel[axis] - 1) * self.jump[axis]
            self.jump[axis] *= stride[axis]

    def text(self):
        if self.whole:
            return "all"
        return "x".join(str(min(r, s)) for r, s in zip(self.rf, self.input_size))


def _walk(module: nn.Module, prefix: str, field: _Field, shapes: dict, rows: list, in_shape) -> None:
    if isinstance(module, Parallel):
        results = []
        for index, branch in enumerate(module.branches):
            branch_field = field.copy()
            _walk(branch, f"{prefix}.branch{index}", branch_field, shapes, rows, in_shape)
            results.append(branch_field)
        field.rf = [max(f.rf[a] for f in results) for a in range(2)]
        field.jump = results[0].jump
        field.whole = any(f.whole for f in results)
        return
    if callable(getattr(module, "stages", None)):  # a named backbone (cnncli.nn.backbones): a row per stage
        _stage_rows(module, field, shapes, rows, in_shape)
        return
    children = list(module.named_children())
    beside, side = getattr(module, "beside", ()), field.copy()
    for name, child in children:
        full = f"{prefix}.{name}" if prefix else name
        if name in beside:
            _walk(child, full, side, shapes, rows, in_shape)
            continue
        if not getattr(module, "gate_only", False):
            field.join(side)  # nothing until the side path has run: its field is inside the main one's
        _walk(child, full, field, shapes, rows, in_shape)
    if children:
        return
    read, out = shapes.get(id(module), ((), None))
    rows.append(_row(module, prefix, field, out, read))


def _stage_rows(backbone: nn.Module, field: _Field, shapes: dict, rows: list, in_shape) -> None:
    """One row per stage of a named backbone: its parameters and connections summed over its
    layers, its output shape and receptive field measured (cnncli.nn.backbones.stage_outputs)."""
    for (name, stage), (out, window) in zip(backbone.stages(), stage_outputs(backbone, in_shape)):
        layers: list[dict] = []
        _walk(stage, name, field.copy(), shapes, layers, in_shape)
        rows.append({"name": name, "type": type(stage).__name__,
                     "detail": describe_stage(stage) or (layers[0]["detail"] if layers else ""),
                     "output_shape": list(out), "parameters": sum(p.numel() for p in stage.parameters()),
                     "connections": sum(layer["connections"] for layer in layers), "receptive_field": window})
    field.whole = True


def _row(module: nn.Module, name: str, field: _Field, out, read: tuple[int, ...]) -> dict:
    """One layer's row; `out` and `read` are the shapes it output and read in the dry run."""
    out = list(out) if out is not None else []
    out_values = math.prod(out) if out else 0
    parameters = sum(p.numel() for p in module.parameters())
    detail, connections = "", 0
    if isinstance(module, nn.Conv2d):
        kernel, stride, padding = module.kernel_size, module.stride, module.padding
        detail = f"{module.in_channels}->{module.out_channels} k{_hw(kernel)} s{_hw(stride)} p{_hw(padding)}"
        if module.groups > 1:
            detail += " depthwise" if module.groups == module.in_channels else f" groups {module.groups}"
        per_output = module.in_channels // module.groups * kernel[0] * kernel[1] + (module.bias is not None)
        connections = out_values * per_output
        field.step(kernel, stride)
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = pair(module.kernel_size), pair(module.stride)
        detail = f"{'max' if isinstance(module, nn.MaxPool2d) else 'avg'} k{_hw(kernel)} s{_hw(stride)}"
        connections = out_values * kernel[0] * kernel[1]
        field.step(kernel, stride)
    elif isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        detail = f"global {'max' if isinstance(module, nn.AdaptiveMaxPool2d) else 'avg'}"
        connections = out_values * math.prod(read[1:])  # each value reads its whole map
        field.whole = True
    elif isinstance(module, nn.Linear):
        detail = f"{module.in_features}->{module.out_features}"
        connections = module.out_features * (module.in_features + (module.bias is not None))
        field.whole = True
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        detail = f"{module.num_features} features"
        connections = out_values
    elif isinstance(module, nn.Dropout):
        detail = f"p={module.p}"
    elif isinstance(module, nn.ZeroPad2d):
        left, right, top, bottom = module.padding
        detail = f"top {top} bottom {bottom} left {left} right {right}"
    elif callable(getattr(module, "connections", None)):
        connections = module.connections(tuple(out))
    return {"name": name, "type": type(module).__name__, "detail": detail, "output_shape": out,
            "parameters": parameters, "connections": connections, "receptive_field": field.text()}


def _leaf_output_shapes(network: nn.Module, input_shape) -> dict:
    """{id of each leaf layer: (the shape it read, the shape it output)}, from a dry run."""
    shapes, hooks = {}, []
    for module in network.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(
                lambda mod, args, out: shapes.__setitem__(id(mod), (tuple(args[0].shape[1:]) if args else (),
                                                                    tuple(out.shape[1:])))))
    try:
        output_shape(network, input_shape, dtype=network.input_dtype)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def pair(value) -> tuple:
    """A layer's kernel, stride, padding or dilation as (height, width), given one number or two."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _hw(value) -> str:
    height, width = pair(value)
    return str(height) if height == width else f"{height}x{width}"


# ---------------------------------------------------------------------------------------------
# Blocks by name, and where a layer's output cells sit on its input (for Grad-CAM)


def named_blocks(backbone: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The backbone's blocks in the order they run, named as in the layer table (conv1, pool1,
    parallel1.branch0.conv1, ...); a parallel block comes after the blocks of its branches, a
    named backbone's stages (layer1.0, ...) are its blocks."""
    if callable(getattr(backbone, "stages", None)):
        yield from ((f"{prefix}.{name}" if prefix else name, stage) for name, stage in backbone.stages())
        return
    for name, child in backbone.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, Parallel):
            for index, branch in enumerate(child.branches):
                yield from named_blocks(branch, f"{full}.branch{index}")
        yield full, child


def named_layers(backbone: nn.Module) -> dict[str, nn.Module]:
    """Every block and every layer inside it by its layer-table name (conv2, conv2.conv, res1.conv1,
    res1.shortcut.conv)."""
    layers = {}
    for name, block in named_blocks(backbone):
        layers[name] = block
        if not isinstance(block, Parallel):
            layers.update((f"{name}.{inner}", module) for inner, module in block.named_modules() if inner)
    return layers


def is_convolution(module: nn.Module) -> bool:
    """A convolution layer, or a block (conv + bn + act ..., a residual block, a named backbone's
    stage) that holds one; a parallel block's convolutions are its branches'."""
    return isinstance(module, nn.Conv2d) or (not isinstance(module, Parallel) and any(
        isinstance(layer, nn.Conv2d) for layer in module.modules()))


def cell_centres(backbone: nn.Module, name: str) -> tuple[list[float], list[float]] | None:
    """(centre of output cell 0, distance between neighbouring cells), per axis (height, width),
    in cells of the backbone's input, for layer `name`: cell (i, j) of its output is centred on
    input position (first[0] + i * step[0], first[1] + j * step[1]). None when the layer's output
    has been pooled over the whole input (its cells are not anywhere in particular). Where
    parallel branches differ, a layer after them is placed as in the first branch."""
    leaves, found = _leaves_until(backbone, "", name)
    if not found:
        raise KeyError(name)
    first, step = [0.0, 0.0], [1.0, 1.0]
    for leaf in leaves:
        if isinstance(leaf, nn.ZeroPad2d):
            left, _, top, _ = leaf.padding
            first[0] -= top * step[0]
            first[1] -= left * step[1]
        elif isinstance(leaf, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride, padding = pair(leaf.kernel_size), pair(leaf.stride), pair(leaf.padding)
            dilation = pair(getattr(leaf, "dilation", 1))
            for axis in range(2):
                first[axis] += ((kernel[axis] - 1) * dilation[axis] / 2 - padding[axis]) * step[axis]
                step[axis] *= stride[axis]
        elif isinstance(leaf, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)):
            return None
    return first, step


def _leaves_until(module: nn.Module, prefix: str, target: str) -> tuple[list[nn.Module], bool]:
    """The leaf layers that run from the backbone's input up to the end of layer `target`, and
    whether `target` was reached; of a parallel block, only the branch on the way, and of a
    block with a path beside its main one, only the path on the way."""
    if prefix == target:
        return list(_run_leaves(module)), True
    if isinstance(module, Parallel):
        for index, branch in enumerate(module.branches):
            leaves, found = _leaves_until(branch, f"{prefix}.branch{index}", target)
            if found:
                return leaves, True
        return list(_run_leaves(module)), False
    children = list(module.named_children())
    if not children:
        return [module], False
    collected, side = [], []  # the side path starts from the block's input, as `collected` does
    for name, child in children:
        leaves, found = _leaves_until(child, f"{prefix}.{name}" if prefix else name, target)
        path = side if name in getattr(module, "beside", ()) else collected
        path += leaves
        if found:
            return path, True
    return collected, False


def _run_leaves(module: nn.Module) -> Iterator[nn.Module]:
    """Leaf layers in run order; of a parallel block, those of its first branch; of a block with
    a path beside its main one, those of the main path."""
    if isinstance(module, Parallel):
        yield from _run_leaves(module.branches[0])
        return
    children = list(module.named_children())
    if not children:
        yield module
    for name, child in children:
        if name not in getattr(module, "beside", ()):
            yield from _run_leaves(child)
