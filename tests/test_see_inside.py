"""The shipped recipes seen from inside, on the small sample data: `eval --report --html`,
`inspect --input --html` and `inspect RECIPE --data` write every file they promise, the PNGs
decode at a sensible size, metrics.json holds exactly what `eval --format json` prints, and the
pages are self-contained. (tests/test_browser.py opens the pages in a real browser.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image
from typer.testing import CliRunner

from cnncli.cli.app import app

runner = CliRunner()
SAMPLES = REPO / "sample_data"

# Each shipped recipe on the sample data, trained for one epoch (so it still makes mistakes to show):
# (recipe, --set, an input to explain).
CASES = {
    "image": ("lecture-3.yaml", [f"data.root={SAMPLES / 'images'}", "data.train=.", "data.test=null",
                                 "data.split.val_fraction=0.1", "train.epochs=1", "train.batch_size=32"],
              str(SAMPLES / "images" / "7" / sorted((SAMPLES / "images" / "7").iterdir())[0].name)),
    "audio": ("fsdd.yaml", [f"data.root={SAMPLES / 'audio'}", "train.epochs=1"],
              str(SAMPLES / "audio" / "3_theo_3.wav")),
    "text": ("sst2.yaml", [f"data.root={SAMPLES / 'text'}", "data.train=sentences.tsv", "data.val=null",
                           "data.test=null", "data.format=manifest", "train.ensemble=2", "train.epochs=1"],
             "<script>alert(1)</script> a stirring , funny & finally transporting film"),
}
REPORT_PICTURES = ["confusion.png", "confusion-normalised.png", "per-class.png", "mistakes.png", "curves.png",
                   "reliability.png"]
INPUT_PICTURES = ["input.png", "overview.png", "gradcam.png", "probabilities.png", "filters.png"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def overrides(kind: str) -> list[str]:
    return [item for value in CASES[kind][1] + ["train.threads=1"] for item in ("--set", value)]


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory):
    kind = request.param
    out = tmp_path_factory.mktemp(kind) / "bundle"
    result = cli("train", REPO / "recipes" / CASES[kind][0], *overrides(kind), "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    return kind, out


def assert_png(path: Path, smallest: int = 100) -> None:
    """A PNG that decodes, neither a speck nor a poster."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()
        assert smallest <= min(image.size) and max(image.size) <= 8000, (path, image.size)


def assert_self_contained(page: Path) -> str:
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "<script" not in html and "<link" not in html and "url(" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r'href="(?!#)', html)
    return html


def test_eval_report_writes_every_file_and_metrics_json_is_what_eval_prints(trained, tmp_path):
    kind, bundle = trained
    printed = cli("eval", bundle, "--format", "json")
    assert printed.exit_code == 0, printed.output
    result = cli("eval", bundle, "--report", tmp_path / "report", "--html", tmp_path / "report.html",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    assert json.loads((report / "metrics.json").read_text()) == json.loads(printed.stdout) == json.loads(result.stdout)
    for name in REPORT_PICTURES:
        assert_png(report / name)
    calibration = json.loads((report / "calibration.json").read_text())
    assert 0 <= calibration["expected_calibration_error"] <= 1
    assert sum(b["count"] for b in calibration["bins"]) == json.loads(printed.stdout)["n"]
    scored = json.loads(printed.stdout)["calibration"]  # the diagram bins the scores eval calls calibrated
    assert calibration["temperature"] == scored["temperature"]
    assert calibration["expected_calibration_error"] == pytest.approx(scored["ece_after"], abs=1e-4)
    mistakes = json.loads((report / "mistakes.json").read_text())
    assert mistakes == sorted(mistakes, key=lambda m: -m["confidence"]) and all(m["true"] != m["predicted"]
                                                                                for m in mistakes)
    for name in INPUT_PICTURES:
        assert_png(report / "walkthrough" / name)
    html = assert_self_contained(tmp_path / "report.html")
    assert html.count("data:image/png") >= len(REPORT_PICTURES) + len(INPUT_PICTURES)


def test_inspect_input_html_walks_through_every_block(trained, tmp_path):
    kind, bundle = trained
    result = cli("inspect", bundle, "--input", CASES[kind][2], "--out", tmp_path / "seen", "--html",
                 tmp_path / "page.html", "--format", "json")
    assert result.exit_code == 0, result.output
    explained = json.loads(result.stdout)["input"]
    for name in INPUT_PICTURES:
        assert_png(tmp_path / "seen" / name)
    blocks = [block["name"] for block in explained["blocks"]]
    if kind == "text":
        assert "parallel1.branch2.conv1" in blocks and explained["members"] == 2
        assert explained["gradcam"]["layers"] == [f"parallel1.branch{i}.conv1" for i in range(3)]
        assert "averaged over the 2 members" in explained["gradcam"]["members"]
        assert explained["maps_from"].startswith("the first of the 2 members")
    else:
        assert explained["gradcam"]["layers"] == ["conv3" if kind == "image" else "conv4"]
    for block in explained["blocks"]:
        assert_png(Path(block["picture"]), smallest=40)
    html = assert_self_contained(tmp_path / "page.html")  # a sentence's <script> is shown, not run
    assert kind != "text" or "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert all(f"<code>{name}</code>" in html for name in blocks)
    assert html.count("data:image/png") == len(blocks) + len(INPUT_PICTURES)


def test_inspect_recipe_data_counts_classes_and_draws_samples(trained, tmp_path):
    kind, bundle = trained
    result = cli("inspect", REPO / "recipes" / CASES[kind][0], "--data", *overrides(kind), "--out", tmp_path,
                 "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    counts = summary["split"]["counts"]
    assert sum(row["train"] + row["val"] + row["test"] for row in summary["classes"].values()) == sum(counts.values())
    measure = {"image": "height", "audio": "seconds", "text": "tokens"}[kind]
    assert summary["measures"][measure]["min"] > 0 and summary["unreadable"] == []
    assert_png(tmp_path / "samples.png")
    assert_png(tmp_path / "measures.png")
    if kind == "text":  # the quickest to read again
        from_bundle = cli("inspect", bundle, "--data", "--out", tmp_path / "bundle", "--format", "json")
        assert json.loads(from_bundle.stdout)["classes"] == summary["classes"]  # the data it was trained on


def test_layer_names_any_convolution_of_the_layer_table_and_a_wrong_one_is_one_line(trained, tmp_path):
    kind, bundle = trained
    layer = {"image": "conv1", "audio": "conv2.conv", "text": "parallel1.branch1.conv1"}[kind]
    result = cli("inspect", bundle, "--input", CASES[kind][2], "--layer", layer, "--out", tmp_path, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input"]["gradcam"]["layers"] == [layer]
    wrong = cli("inspect", bundle, "--input", CASES[kind][2], "--layer", "fc9", "--out", tmp_path / "wrong")
    assert wrong.exit_code == 2 and wrong.stderr.count("\n") == 1 and not (tmp_path / "wrong").exists()
    assert wrong.stderr.startswith("error: --layer fc9: no such layer (convolutions: ")


def test_options_that_need_another_are_one_line_errors(tmp_path):
    bundle = REPO / "tests" / "fixtures" / "bundles-v1" / "image"
    for args, message in [(["eval", bundle, "--html", tmp_path / "x.html"], "--html: give --report DIR too"),
                          (["eval", bundle, "--layer", "conv1"], "--layer: give --report DIR too"),
                          (["inspect", bundle, "--html", tmp_path / "x.html"], "--html: applies with --input"),
                          (["inspect", bundle, "--data", "--input", "x.png"], "--data: not with --input")]:
        result = cli(*args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_report_page_and_picture_paths_are_checked_before_any_work(tmp_path):
    bundle = REPO / "tests" / "fixtures" / "bundles-v1" / "image"
    (tmp_path / "file").write_text("a file, not a folder")
    for args, message in [
            (["eval", bundle, "--report", tmp_path / "file"], f"--report {tmp_path / 'file'}: exists and is not a folder"),
            (["eval", bundle, "--report", tmp_path / "report", "--html", "/proc/cnncli-x.html"],
             "--html /proc/cnncli-x.html: cannot write there"),
            (["inspect", bundle, "--input", tmp_path / "missing.png", "--out", tmp_path / "seen", "--html", tmp_path],
             f"--html {tmp_path}: is a folder"),
            (["inspect", SAMPLES / "images", "--out", "/proc/cnncli-x"], "--out /proc/cnncli-x: cannot write there")]:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # nothing was written


@pytest.mark.parametrize("damage", [lambda record: {**record, "train_loss": "high"},
                                    lambda record: json.dumps(record).replace("0.2,", "NaN,", 1)])
def test_a_damaged_training_log_is_one_line_naming_its_line(tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "tests" / "fixtures" / "bundles-v1" / "image", bundle)
    lines = (bundle / "log.jsonl").read_text().splitlines()
    damaged = damage(json.loads(lines[0]))
    lines[0] = damaged if isinstance(damaged, str) else json.dumps(damaged)
    (bundle / "log.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("eval", bundle, SAMPLES / "images", "--report", tmp_path / "report")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"error: {bundle / 'log.jsonl'}:1: ")
    assert not (tmp_path / "report").exists()  # refused before anything was drawn
