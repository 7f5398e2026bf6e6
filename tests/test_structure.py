"""The shape of the package: a new modality plugs in from outside, no import cycles, short files
and functions, names checked against their registries, old bundles still load."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO
from torch import nn
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES
from cnncli.modalities.base import Modality

PACKAGE = REPO / "cnncli"
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- a fourth modality, defined and registered here alone --------------------------------------


@dataclass
class RowOptions:
    delimiter: str = ","


@dataclass
class RowAugment:
    jitter: float = 0.0  # Gaussian noise on the normalised numbers, std


class RowStem(nn.Module):
    """(N, W) numbers -> normalised (N, 1, 1, W) pictures."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x):
        return ((x - self.mean) / self.std).view(len(x), 1, 1, -1)


class RowModality(Modality):
    """A CSV file holding one row of numbers, read as a 1 x N picture."""

    name = "rows"
    extensions = (".csv",)
    options_type = RowOptions
    augment_type = RowAugment
    default_blocks = [{"conv": {"channels": 4, "kernel": [1, 3]}}, {"pool": {"type": "max", "size": "global"}}]

    def __init__(self, options: RowOptions, augment: RowAugment | None = None, width: int | None = None,
                 mean: float = 0.0, std: float = 1.0):
        self.options, self.augment_config = options, augment or RowAugment()
        self.width, self.mean, self.std = width, mean, std

    @classmethod
    def from_config(cls, config):
        return cls(cls.options_from(config), cls.augment_from(config))

    @classmethod
    def from_state(cls, state):
        return cls(RowOptions(**state["options"]), None, state["width"], state["mean"], state["std"])

    def state_dict(self):
        return {"options": {"delimiter": self.options.delimiter}, "width": self.width, "mean": self.mean,
                "std": self.std}

    def fit(self, samples):
        self.width = len(self.encode(samples[0]))

    def encode(self, sample: Sample) -> torch.Tensor:
        try:
            numbers = [float(v) for v in Path(sample.locator).read_text().strip().split(self.options.delimiter)]
        except (OSError, ValueError) as error:
            raise CnncliError(f"{sample.locator}: not a row of numbers ({error})") from None
        if self.width is not None and len(numbers) != self.width:
            raise CnncliError(f"{sample.locator}: {len(numbers)} numbers, expected {self.width}")
        return torch.tensor(numbers)

    def fit_encoded(self, encoded):
        self.mean, self.std = float(encoded.mean()), float(encoded.std())

    def augment(self, batch, generator):
        noise = torch.randn(batch.shape, generator=generator, device=batch.device)
        return batch + noise * self.augment_config.jitter * self.std

    @property
    def input_shape(self):
        return (self.width or 1,)

    def build_stem(self):
        return RowStem(self.mean, self.std)

    def describe(self):
        return f"rows of {self.width} numbers"

    def draw(self, sample, path, network=None):
        from cnncli.files.atomic import write_file
        from cnncli.output.plots import figure_png, plt

        figure, axis = plt.subplots(figsize=(4, 1))
        axis.imshow(self.encode(sample).view(1, -1).numpy(), aspect="auto")
        write_file(path, figure_png(figure))


@pytest.fixture
def rows_modality():
    MODALITIES.register("rows", RowModality)
    yield RowModality
    MODALITIES.unregister("rows")


@pytest.fixture(scope="module")
def rows_data(tmp_path_factory):
    """Rising rows against falling rows, 12 of each, as class folders of .csv files."""
    root = tmp_path_factory.mktemp("rows")
    generator = torch.Generator().manual_seed(0)
    for label, sign in (("rising", 1), ("falling", -1)):
        (root / "data" / label).mkdir(parents=True)
        for index in range(12):
            values = sign * torch.linspace(-1, 1, 16) + 0.2 * torch.randn(16, generator=generator)
            (root / "data" / label / f"{index:02d}.csv").write_text(",".join(f"{v:.4f}" for v in values.tolist()))
    recipe = root / "rows.yaml"
    recipe.write_text("data: {modality: rows, root: data, split: {test_fraction: 0.25, val_fraction: 0.2}}\n"
                      "model: {blocks: [{conv: {channels: 4, kernel: [1, 3]}}, {pool: {type: max, size: global}}]}\n"
                      "train: {epochs: 8, batch_size: 4, lr: 0.05}\naugment: {jitter: 0.05}\n")
    return root


def test_a_modality_registered_outside_cnncli_trains_evaluates_predicts_and_inspects(rows_modality, rows_data,
                                                                                     tmp_path):
    bundle = tmp_path / "rows-bundle"
    trained = cli("train", rows_data / "rows.yaml", "--out", bundle, "--format", "json")
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["metrics"]["test"]["n"] == 6
    info = json.loads((bundle / "model.json").read_text())
    assert info["modality"]["name"] == "rows" and info["recipe"]["augment"]["jitter"] == 0.05
    assert info["recipe"]["data"]["rows"] == {"delimiter": ","}
    evaluated = cli("eval", bundle, "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == summary["metrics"]["test"]["accuracy"]
    sample = rows_data / "data" / "rising" / "00.csv"
    (tmp_path / "broken.csv").write_text("1,2,oops")
    predicted = cli("predict", bundle, sample, tmp_path / "broken.csv", "--format", "jsonl")
    assert predicted.exit_code == 1  # one bad input: reported in its row, the other still predicted
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert rows[0]["label"] in ("rising", "falling") and "not a row of numbers" in rows[1]["error"]
    inspected = cli("inspect", bundle, "--input", sample, "--out", tmp_path / "seen", "--format", "json")
    assert inspected.exit_code == 0, inspected.output
    layers = json.loads(inspected.stdout)
    assert layers["layers"][0]["detail"] == "rows of 16 numbers"
    assert (tmp_path / "seen" / "input.png").exists() and (tmp_path / "seen" / "features-conv1.png").exists()
    assert layers["input"]["gradcam"]["layers"] == ["conv1"] and (tmp_path / "seen" / "gradcam.png").exists()
    # The report and the data view draw it with the interface's defaults (the stem's output, its shape).
    reported = cli("eval", bundle, "--report", tmp_path / "report", "--format", "json")
    assert reported.exit_code == 0, reported.output
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == json.loads(evaluated.stdout)
    data = cli("inspect", rows_data / "rows.yaml", "--data", "--out", tmp_path / "data", "--format", "json")
    assert data.exit_code == 0, data.output
    assert json.loads(data.stdout)["measures"]["shape"]["values"] == {"16": 24}
    assert (tmp_path / "data" / "samples.png").exists()


def test_a_registered_modality_keeps_its_augment_keys_to_itself(rows_modality, rows_data, tmp_path):
    shifted = cli("train", rows_data / "rows.yaml", "--set", "augment.shift=0.1", "--out", tmp_path / "x")
    assert shifted.exit_code == 2 and "augment.shift: does not apply to rows data (usable: jitter)" in shifted.output
    jittery = cli("train", REPO / "recipes" / "quickstart.yaml", "--set", "augment.jitter=0.1", "--out", tmp_path / "y")
    assert jittery.exit_code == 2 and "augment.jitter: does not apply to image data" in jittery.output


# -- the package's shape --------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """cnncli modules `path` imports anywhere: at the top, inside functions, under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnncli"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def test_no_module_imports_a_module_that_imports_it_back():
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}
    cycles = []

    def reachable(start: str) -> set[str]:
        seen, stack = set(), list(graph[start])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(graph.get(current, ()))
        return seen

    for name in graph:
        cycles += [f"{name} <-> {other}" for other in graph[name] if name in reachable(other)]
    assert not cycles


# The packages from the ground up: each may import the ground floor (the modules directly under
# cnncli/) and the packages before it in this list, never one after it. docs/ARCHITECTURE.md
# draws the same order.
LAYERS = ["files", "output", "runtime", "nn", "data", "modalities", "recipe", "bundle", "training", "verbs",
          "experiments", "serve", "cli"]


def layer(module: str) -> int:
    """-1 for the ground floor, the package's place in LAYERS otherwise; __main__ sits on top."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else -1


def test_every_package_has_its_place_in_the_layers():
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS)


def test_the_top_level_holds_a_handful_of_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_no_package_imports_a_package_above_it():
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    upward = [f"{name} -> {target}" for name, path in files.items()
              for target in imported_modules(path, set(files)) if layer(target) > layer(name)]
    assert not upward


def test_the_layer_test_sees_a_lazy_import_that_runs_upward(tmp_path):
    """The rule above is only as good as imported_modules: an import inside a function counts."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from cnncli.cli.app import app\n    return app\n")
    assert imported_modules(module, {"cnncli.cli.app"}) == {"cnncli.cli.app"}
    assert layer("cnncli.cli.app") > layer("cnncli.nn.model") > layer("cnncli.errors")


def test_every_name_registered_as_a_string_points_at_something_that_exists():
    """Registries on a lower floor name their entries as "module:attr" strings (cnncli.names):
    each must import and resolve, or a recipe naming it would fail only when training starts."""
    from cnncli.names import OPTIMIZERS, SCHEDULES

    for registry in (OPTIMIZERS, SCHEDULES, MODALITIES):
        assert all(callable(entry) for _, entry in registry.items())


def test_files_and_functions_stay_short():
    long_files = [f"{path.name}: {count}" for path in PACKAGE.rglob("*.py")
                  if (count := len(path.read_text().splitlines())) > 400]
    assert not long_files
    long_functions = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                body = ast.get_source_segment(source, node) or ""
                if "# long because" not in body:
                    long_functions.append(f"{path.name}:{node.name}")
    assert not long_functions


def test_the_core_names_no_modality():
    core = [path for path in PACKAGE.rglob("*.py") if "modalities" not in path.parts]
    named = [f"{path.name}: {line.strip()}" for path in core for line in path.read_text().splitlines()
             if any(f"cnncli.modalities.{name}" in line for name in ("image", "audio", "text"))]
    assert not named


# -- names are checked against their registries when they are read --------------------------------


@pytest.mark.parametrize("override, message", [
    ("train.optimizer=adagrad", "train.optimizer: unknown optimizer 'adagrad' (known: adam, adamw, sgd)"),
    ("train.schedule=warp", "train.schedule: unknown schedule 'warp' (known: constant, exponential, cosine, onecycle)"),
    ("data.text.tokenizer=bpe", "data.text.tokenizer: unknown tokenizer 'bpe' (known: words, whitespace, chars)"),
    ("data.modality=smell", "data.modality: unknown modality 'smell' (known: image, audio, text)"),
])
def test_an_unknown_name_on_the_command_line_lists_the_known_ones(override, message, tmp_path):
    result = cli("train", REPO / "recipes" / "quickstart.yaml", "--set", override, "--out", tmp_path / "run")
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_an_unknown_tokenizer_in_a_recipe_is_refused_when_it_is_read(tmp_path):
    from cnncli.recipe.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {modality: text, text: {tokenizer: sentencepiece}}\nmodel: {blocks: [flatten]}\n")
    with pytest.raises(CnncliError, match=r"data.text.tokenizer: unknown tokenizer 'sentencepiece' \(known: "):
        load_config(recipe)


@pytest.mark.parametrize("command", [["train", REPO / "recipes" / "quickstart.yaml"], ["eval", "nowhere"],
                                     ["inspect", REPO / "recipes" / "quickstart.yaml"], ["predict", "nowhere", "x"]])
def test_an_unknown_output_format_fails_before_any_work(command, tmp_path):
    result = cli(*command, "--format", "xml")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--format: unknown output format 'xml' (known: table, json, csv, jsonl)" in result.output


def test_a_format_that_does_not_fit_the_command_is_refused_with_the_ones_that_do():
    result = cli("eval", "nowhere", "--format", "csv")
    assert result.exit_code == 2 and "--format csv: not available here (use table, json)" in result.output


# -- bundles written before the restructuring ------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "audio", "text"])
def test_a_bundle_written_before_the_restructuring_loads_and_predicts_the_same(kind, monkeypatch):
    fixture = REPO / "tests" / "fixtures" / "bundles-v1" / kind
    expected = [json.loads(line) for line in (fixture / "expected.jsonl").read_text().splitlines()]
    monkeypatch.chdir(REPO)  # the recorded inputs are relative to the repository
    result = cli("predict", fixture, *[row["input"] for row in expected], "--format", "jsonl",
                 "--top-k", len(expected[0]["top"]), "--batch-size", 3)
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["label"] for row in got] == [row["label"] for row in expected]
    for ours, theirs in zip(got, expected):
        assert {t["label"]: t["score"] for t in ours["top"]} == pytest.approx(
            {t["label"]: t["score"] for t in theirs["top"]}, abs=2e-6)
