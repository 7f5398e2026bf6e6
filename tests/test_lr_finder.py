import json
import math

from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.training.lr_finder import suggest


def test_suggestion_is_the_steepest_descent():
    rates = [10 ** (-6 + i * 0.1) for i in range(60)]
    # Loss flat, then falling fastest around 1e-3, then flat again.
    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(r) + 3) * 4)) for r in rates]
    assert abs(math.log10(suggest(rates, losses)) + 3) <= 0.15


def test_find_lr_on_a_folder_plots_and_suggests(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}}}\n"
                      "model: {blocks: [{conv: {channels: 4}}]}\ntrain: {batch_size: 8}\n")
    result = CliRunner().invoke(app, ["train", str(recipe), "--find-lr", "--out", str(tmp_path / "run"),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["lr"] == sorted(found["lr"]) and len(found["lr"]) == len(found["loss"]) > 10
    assert found["suggestion"] in found["lr"]
    assert (tmp_path / "run" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "run" / "model.json").exists()  # a range test writes no bundle
