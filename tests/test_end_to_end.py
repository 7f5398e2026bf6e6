"""train -> eval -> predict -> inspect through the real command line, on real sample files."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SAMPLE_IMAGES
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle, read_info
from cnncli.cli.app import app
from cnncli.data.sources import expand_paths
from cnncli.modalities.image import ImageModality
from cnncli.nn.inference import probabilities

runner = CliRunner()


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = cli("train", REPO / "recipes" / "quickstart.yaml", "--set", "train.epochs=3", "--out", out,
                 "--format", "json")
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_bundle(bundle):
    info = read_info(bundle)
    assert info["status"] == "complete"
    assert info["labels"] == [str(d) for d in range(10)]
    assert info["recipe"]["train"]["epochs"] == 3
    assert info["split"]["counts"] == {"train": 680, "val": 120, "test": 200}  # 100 per class: 20 test, 12 val
    assert 0 <= info["metrics"]["test"]["accuracy"] <= 1 and info["metrics"]["test"]["n"] == 200
    assert info["modality"]["state"]["mean"] != [0.0]  # normalisation fitted on training images
    log = (bundle / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]
    assert all(json.loads(line)["gflops"] > 0 for line in log)  # images: every pass is the full height
    assert (bundle / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(bundle.parent.glob(".digits.tmp-*"))


def test_eval_json_reproduces_the_test_metrics_of_training(bundle):
    result = cli("eval", bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "per_class", "confusion_matrix", "n"}
    assert report["n"] == 200
    assert report["accuracy"] == read_info(bundle)["metrics"]["test"]["accuracy"]
    assert sum(map(sum, report["confusion_matrix"])) == 200


def test_eval_on_other_data_uses_the_bundle_rules(bundle):
    result = cli("eval", bundle, SAMPLE_IMAGES, "--format", "json")
    assert json.loads(result.stdout)["n"] == 200


def test_predict_reports_a_corrupt_file_and_finishes_the_rest(bundle, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    good = sorted((SAMPLE_IMAGES / "3").glob("*.png"))[:2]
    result = cli("predict", bundle, good[0], broken, good[1], "--format", "csv", "--top-k", "3")
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "input,label,score,top,error"
    assert [line.split(",")[0] for line in lines[1:]] == [str(good[0]), str(broken), str(good[1])]
    assert "broken.png: not a readable image" in lines[2]
    assert lines[1].split(",")[3].count(":") == 3  # top-3 labels with scores


def test_predict_jsonl_to_a_file_from_folders_and_globs(bundle, tmp_path):
    out = tmp_path / "rows.jsonl"
    result = cli("predict", bundle, SAMPLE_IMAGES / "0", str(SAMPLE_IMAGES / "1" / "*.png"), "--format", "jsonl",
                 "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and all(row["error"] is None for row in rows)
    assert rows[0]["input"].endswith("0/t10k-00003.png")


def test_bundle_round_trip_gives_the_same_predictions(bundle):
    loaded = load_bundle(bundle)
    images = ImageModality.from_state(read_info(bundle)["modality"]["state"])
    from cnncli.data.sources import expand_paths

    samples = list(expand_paths([str(SAMPLE_IMAGES / "7")], images.extensions))
    encoded = images.encode_many(samples).tensor
    first = probabilities(loaded.network, images, encoded, 64, torch.device("cpu"))
    second = probabilities(load_bundle(bundle).network, images, encoded, 64, torch.device("cpu"))
    assert torch.equal(first, second)
    report = json.loads(cli("eval", bundle, SAMPLE_IMAGES, "--format", "json").stdout)
    assert report["per_class"]["7"]["support"] == 20


def test_inspect_bundle_json_and_feature_maps(bundle, tmp_path):
    image = sorted((SAMPLE_IMAGES / "5").glob("*.png"))[0]
    result = cli("inspect", bundle, "--input", image, "--out", tmp_path / "seen", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total_parameters"] == sum(row["parameters"] for row in summary["layers"])
    names = [row["name"] for row in summary["layers"]]
    assert "conv1.conv" in names and "classifier.linear" in names
    assert (tmp_path / "seen" / "input.png").exists() and (tmp_path / "seen" / "features-conv1.png").exists()


def test_inspect_recipe_shows_the_hand_counted_total():
    result = cli("inspect", REPO / "recipes" / "lecture-1.yaml", "--format", "json")
    assert json.loads(result.stdout)["total_parameters"] == 122_270
    table = cli("inspect", REPO / "recipes" / "lecture-1.yaml").stdout
    assert "122,270" in table


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: {blocks: [flatten]}\ntrain: {epochs: 0}\n")
    for args in (["train", recipe], ["eval", tmp_path], ["train", recipe.with_name("missing.yaml")],
                 ["train", REPO / "recipes" / "quickstart.yaml", "--set", "train.epoch=1"]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert "Traceback" not in result.output


def test_retraining_replaces_the_bundle_atomically(bundle, tmp_path):
    unrelated = tmp_path / "keep"
    unrelated.mkdir()
    (unrelated / "precious.txt").write_text("mine")
    result = cli("train", REPO / "recipes" / "quickstart.yaml", "--set", "train.epochs=1", "--out", unrelated)
    assert result.exit_code == 2 and "is not a cnncli bundle" in result.stderr
    assert (unrelated / "precious.txt").read_text() == "mine"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom cnncli.cli.app import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("ok")


def test_train_from_a_folder_with_a_corrupt_file_skips_it_and_says_so(tiny_image_folder, tmp_path):
    (tiny_image_folder / "left" / "zz-broken.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "run"
    result = cli("train", tiny_image_folder, "--set", "train.epochs=1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable" in result.stderr and "zz-broken.png" in result.stderr
    info = read_info(out)
    assert info["recipe"]["data"]["modality"] == "image"
    # the general recipe for a folder: gray PNGs on one channel, 8 x 8 widened to what three pools need
    assert info["input_shape"] == [1, 9, 9]
    assert sum(info["training"]["skipped"].values()) == 1


def test_an_ensemble_bundle_averages_members_trained_from_their_own_seeds(bundle, tmp_path):
    """train.ensemble=2: member 0 is the single network of the same seed, member 1 another one,
    and the bundle predicts their average probability."""
    out = tmp_path / "pair"
    result = cli("train", REPO / "recipes" / "quickstart.yaml", "--set", "train.epochs=3",
                 "--set", "train.ensemble=2", "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    pair, single = load_bundle(out), load_bundle(bundle)
    assert read_info(out)["members"] == 2 and len(read_info(out)["training"]["kept_epoch"]) == 2
    first, second = pair.network.members
    for (name, ours), theirs in zip(first.state_dict().items(), single.network.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert not torch.equal(first.classifier.linear.weight, second.classifier.linear.weight)
    samples = list(expand_paths([str(SAMPLE_IMAGES)], pair.modality.extensions))[:8]
    inputs = torch.stack([pair.modality.encode(sample) for sample in samples])
    averaged = probabilities(pair.network, pair.modality, inputs, 4, torch.device("cpu"))
    by_hand = (probabilities(first, pair.modality, inputs, 4, torch.device("cpu"))
               + probabilities(second, pair.modality, inputs, 4, torch.device("cpu"))) / 2
    assert torch.allclose(averaged, by_hand, atol=1e-6)
    assert [json.loads(line).get("member") for line in (out / "log.jsonl").read_text().splitlines()] == [1, 1, 1, 2, 2, 2]
