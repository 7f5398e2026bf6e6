"""--adapt: batch norm statistics measured again on the inputs (AdaBN), in eval and predict."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import REPO, SAMPLE_IMAGES

from cnncli.bundle.io import load_bundle
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.nn.adaptation import adapted_to, batch_norms
from cnncli.nn.inference import for_inference, network_outputs
from cnncli.verbs.predict import predict

BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
CPU = torch.device("cpu")


def digits() -> tuple[list[str], torch.Tensor, object]:
    bundle = load_bundle(BUNDLES / "image")
    files = sorted(str(path) for path in SAMPLE_IMAGES.rglob("*.png"))
    labels = torch.tensor([bundle.labels.index(os.path.basename(os.path.dirname(f))) for f in files])
    return files, labels, bundle


def encoded(bundle, files: list[str]) -> torch.Tensor:
    return bundle.modality.encode_many([Sample(locator=f, label=None, position=0) for f in files]).tensor


def accuracy(bundle, network, inputs, labels) -> float:
    outputs = network_outputs(for_inference(network, CPU), bundle.modality, inputs, 64, CPU)
    return float((outputs.argmax(1) == labels).float().mean())


def test_adapting_measures_batch_norm_on_the_inputs_and_leaves_the_bundle_as_it_was():
    files, _, bundle = digits()
    inputs = encoded(bundle, files)  # 200 digits: batches of 256 and of what is left alike
    before = {name: value.clone() for name, value in bundle.network.state_dict().items()}
    adapted = adapted_to(bundle.network, bundle.modality, inputs, CPU)
    assert all(torch.equal(value, bundle.network.state_dict()[name]) for name, value in before.items())
    first = batch_norms(bundle.network)[0]
    seen = []
    hook = first.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    with torch.no_grad():
        bundle.network(inputs)
    hook.remove()
    measured = batch_norms(adapted)[0]
    assert torch.allclose(measured.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-4)
    assert not torch.allclose(measured.running_mean, first.running_mean, atol=1e-2)
    weights = {name: value for name, value in adapted.state_dict().items() if "running" not in name}
    assert all(torch.equal(value, before[name]) for name, value in weights.items() if "num_batches" not in name)


def test_adapting_undoes_a_change_of_contrast_the_network_never_saw():
    files, labels, bundle = digits()
    inputs = encoded(bundle, files)
    washed_out = (inputs.float() * 0.5 + 100).to(inputs.dtype)  # a grey, low-contrast camera
    as_trained = accuracy(bundle, bundle.network, inputs, labels)
    plain = accuracy(bundle, bundle.network, washed_out, labels)
    adapted = accuracy(bundle, adapted_to(bundle.network, bundle.modality, washed_out, CPU), washed_out, labels)
    assert plain < as_trained - 0.15 and adapted > as_trained - 0.05


def test_predict_adapts_on_the_first_inputs_and_still_predicts_every_one_in_order(monkeypatch):
    files, _, bundle = digits()
    chosen = files[::5][:30]
    monkeypatch.setattr("cnncli.verbs.predict.MAX_ADAPT_INPUTS", 8)
    rows = list(predict(bundle, chosen, top_k=3, workers=0, adapt=True, chunk_size=16))
    assert [row.input for row in rows] == chosen
    network = for_inference(adapted_to(bundle.network, bundle.modality, encoded(bundle, chosen[:8]), CPU), CPU)
    expected = network_outputs(network, bundle.modality, encoded(bundle, chosen), 64, CPU).softmax(1)
    assert [row.label for row in rows] == [bundle.labels[i] for i in expected.argmax(1).tolist()]
    assert [row.score for row in rows] == pytest.approx(expected.max(1).values.tolist(), abs=2e-6)
    plain = list(predict(bundle, chosen, workers=0))
    assert [row.score for row in plain] != pytest.approx([row.score for row in rows], abs=1e-3)


def test_segment_adapts_to_the_sounds_of_each_recording(tmp_path):
    from test_audio_events import recording

    audio = load_bundle(BUNDLES / "audio")
    paths = [str(recording(tmp_path / "a.wav")), str(recording(tmp_path / "b.wav", tone_dbfs=-30.0, seed=1))]
    rows = list(predict(audio, paths, segment=True, adapt=True, top_k=2))
    plain = list(predict(audio, paths, segment=True, top_k=2))
    assert [(r.input, r.start, r.end) for r in rows] == [(r.input, r.start, r.end) for r in plain]
    for path in paths:
        sounds = torch.cat([batch for _, batch in audio.modality.spans(path)])
        network = for_inference(adapted_to(audio.network, audio.modality, sounds, CPU), CPU)
        expected = network_outputs(network, audio.modality, sounds, 64, CPU).softmax(1)
        assert [r.score for r in rows if r.input == path] == pytest.approx(expected.max(1).values.tolist(), abs=2e-6)
    assert [r.score for r in rows] != pytest.approx([r.score for r in plain], abs=1e-3)


def test_adapt_is_refused_for_windows_and_for_a_network_without_batch_norm(tmp_path):
    audio = load_bundle(BUNDLES / "audio")
    recording = str(sorted((REPO / "sample_data" / "audio").glob("*.wav"))[0])
    with pytest.raises(CnncliError, match="--adapt measures whole inputs or the sounds found in them"):
        list(predict(audio, [recording], adapt=True, window=1.0))
    text = load_bundle(BUNDLES / "text")
    assert not batch_norms(text.network)
    with pytest.raises(CnncliError, match="--adapt: this network has no batch norm"):
        list(predict(text, ["a fine film", "dull"], adapt=True, workers=0))


def test_eval_adapt_reports_the_adapted_network_on_that_data():
    import json

    from typer.testing import CliRunner

    from cnncli.cli.app import app

    files, labels, bundle = digits()
    result = CliRunner().invoke(app, ["eval", str(BUNDLES / "image"), str(SAMPLE_IMAGES), "--adapt", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    inputs = encoded(bundle, files)
    assert report["adapted_on"] == len(files)
    assert report["accuracy"] == pytest.approx(
        accuracy(bundle, adapted_to(bundle.network, bundle.modality, inputs, CPU), inputs, labels), abs=1e-6)
    plain = json.loads(CliRunner().invoke(app, ["eval", str(BUNDLES / "image"), str(SAMPLE_IMAGES),
                                                "--format", "json"]).stdout)
    assert "adapted_on" not in plain


def test_predict_help_gives_the_number_of_inputs_adapt_reads():
    from typer.testing import CliRunner

    from cnncli.cli.app import app
    from cnncli.nn.adaptation import MAX_ADAPT_INPUTS

    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert f"the first {MAX_ADAPT_INPUTS:,} inputs" in " ".join(result.output.split())
