"""The hand-written references in bench/reference/ build the same networks as the recipes.

Same seed -> same initial weights in the same order, and the same outputs for the same input, so
the accuracy benchmark compares like with like (a drifted recipe or reference fails here first).
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from cnncli.data.sample import Sample
from cnncli.data.split import fold_count, stratified_folds
from cnncli.modalities.audio import BandNormalize
from cnncli.modalities.image import Normalize
from cnncli.modalities.text import TokenEmbedding
from cnncli.nn.model import build_network
from cnncli.recipe.config import load_config

REPO = Path(__file__).resolve().parent.parent


def kim_network(blocks, stem, length: int):
    """cnncli's text network on a bare stem, trimming padding in training as TextModality sets it up."""
    from cnncli.modalities.text import TextModality, TextOptions

    network = build_network(blocks, stem, (length,), 2, torch.long)
    TextModality(TextOptions()).adapt_stem(network.stem, network.backbone)
    return network


def reference(name: str):
    spec = importlib.util.spec_from_file_location(f"reference_{name}", REPO / "bench" / "reference" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_rows():
    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_accuracy", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.ROWS


def assert_same_network(ours: torch.nn.Module, theirs: torch.nn.Module, ours_input, theirs_input) -> None:
    ours_parameters = [p.detach() for p in ours.parameters()]
    theirs_parameters = [p.detach() for p in theirs.parameters()]
    assert [tuple(p.shape) for p in ours_parameters] == [tuple(p.shape) for p in theirs_parameters]
    assert all(torch.equal(a, b) for a, b in zip(ours_parameters, theirs_parameters)), "initial weights differ"
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ours_input), theirs(theirs_input))


@pytest.mark.parametrize("config", ["1", "2", "3", "best"])
def test_image_reference_matches_recipe(config):
    recipe = "fashion-best.yaml" if config == "best" else f"lecture-{config}.yaml"
    blocks = load_config(REPO / "recipes" / recipe).model.blocks
    torch.manual_seed(0)
    ours = build_network(blocks, Normalize([0.0], [1.0]), (1, 28, 28), 10)
    torch.manual_seed(0)
    theirs = reference("lecture").build_model(config)
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert_same_network(ours, theirs, pixels, pixels.float() / 255.0)


def test_image_reference_hyper_parameters_match_recipes():
    configs = reference("lecture").CONFIGS
    for config in ("1", "2", "3", "best"):
        recipe = load_config(REPO / "recipes" / ("fashion-best.yaml" if config == "best" else f"lecture-{config}.yaml"))
        train, settings = recipe.train, configs[config]
        assert (train.epochs, train.batch_size, train.lr, train.schedule, train.lr_min) == (
            settings["epochs"], settings["batch"], settings["lr"], settings["schedule"], settings["lr_min"])
        assert train.label_smoothing == settings.get("label_smoothing", 0.0)
        assert (recipe.augment.shift, recipe.augment.rotate, recipe.augment.hflip) == (
            settings.get("shift", 0.0), settings.get("rotate", 0.0), settings.get("hflip", False))


@pytest.mark.parametrize("recipe, members", [("fsdd", 3), ("fsdd-best", 5)])
def test_fsdd_reference_matches_recipe(recipe, members):
    config = load_config(REPO / "recipes" / f"{recipe}.yaml")
    module = reference("fsdd")
    row = next(row for row in reference_rows() if row.recipe == f"recipes/{recipe}.yaml")
    assert config.train.ensemble == members and row.reference[1:] == ["--members", str(members)]
    audio = config.data.audio
    assert (audio.sample_rate, audio.duration, audio.n_fft, audio.hop_length, audio.n_mels, audio.top_db) == (
        module.SAMPLE_RATE, module.DURATION, module.N_FFT, module.HOP, module.N_MELS, module.TOP_DB)
    assert (config.train.epochs, config.train.batch_size, config.train.lr, config.train.schedule) == (
        module.EPOCHS, module.BATCH, module.LR, "cosine")
    assert audio.level == "peak"  # the reference measures dB below each picture's peak
    assert (config.train.mixup, audio.remove_dc) == (module.MIXUP, module.REMOVE_DC)
    augment = config.augment
    assert (augment.time_shift, augment.time_mask, augment.freq_mask, augment.gain_db) == (
        module.TIME_SHIFT, module.TIME_MASK, module.FREQ_MASK, 0.0)
    assert (augment.speed, augment.pitch, augment.eq_db, augment.noise_prob) == (
        module.SPEED, module.PITCH, module.EQ_DB, module.NOISE_PROB)
    assert tuple(augment.noise_snr) == module.NOISE_SNR and augment.background is None
    assert (augment.noise, augment.background_class) == (0.0, 0.0)
    torch.manual_seed(0)
    ours = build_network(config.model.blocks, BandNormalize([0.0] * 40, [1.0] * 40), (1, 40, 126), 10)
    torch.manual_seed(0)
    theirs = module.build_model()
    pictures = torch.randn(3, 1, 40, 126)
    assert_same_network(ours, theirs, pictures, pictures)


@pytest.mark.parametrize("task", ["mr", "sst2"])
def test_text_reference_matches_recipe(task):
    config = load_config(REPO / "recipes" / f"{task}.yaml")
    module = reference("kim_cnn")
    settings = module.TASKS[task]
    text, train, augment = config.data.text, config.train, config.augment
    assert (text.max_length, text.embedding_dim, text.embeddings, text.tokenizer, text.min_freq, text.max_vocab) == (
        module.MAX_LENGTH, settings["dimension"], "rand", "words", 1, None)
    assert (train.epochs, train.batch_size, train.lr, train.max_norm, train.schedule, train.label_smoothing) == (
        settings["epochs"], settings["batch"], settings["lr"], module.MAX_NORM, "constant", 0.0)
    assert (train.ensemble, train.ema, train.optimizer, train.keep) == (settings["members"], None, "adam", "best")
    assert (augment.word_crop, augment.word_dropout) == (settings["word_crop"], settings["word_dropout"])
    assert train.rotate_val == settings.get("rotate", False)
    if train.rotate_val:  # the reference deals folds of 10% with seed 1
        assert (module.FOLDS, config.data.split.seed + 1) == (fold_count(config.data.split.val_fraction), 1)
    torch.manual_seed(0)
    stem = TokenEmbedding(50, text.embedding_dim, "rand")
    ours = kim_network(config.model.blocks, stem, text.max_length)
    torch.manual_seed(0)
    theirs = module.KimCNN(50, 2, settings["dimension"], settings["input_dropout"], settings["pad"])
    ids = torch.randint(0, 50, (3, text.max_length))
    assert_same_network(ours, theirs, ids, ids)
    dropouts = [m.p for m in ours.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [p for p in (settings["input_dropout"], 0.5) if p]


def test_text_reference_augments_like_cnncli():
    from cnncli.modalities.text import TextAugment, TextModality, TextOptions

    ids = torch.randint(2, 40, (6, 12))
    ids[:, 7:] = 0
    for crop, drop in ((0.5, 0.3), (0.0, 0.2), (0.4, 0.0)):
        ours = TextModality(TextOptions(), augment=TextAugment(word_crop=crop, word_dropout=drop)).augment(
            ids, torch.Generator().manual_seed(3))
        theirs = reference("kim_cnn").augment(ids, {"word_crop": crop, "word_dropout": drop},
                                              torch.Generator().manual_seed(3))
        assert torch.equal(ours, theirs)


def test_text_reference_tokenizes_like_cnncli():
    from cnncli.modalities.text.tokenize import tokenize

    clean_words = reference("kim_cnn").clean_words
    for sentence in ["It's a GREAT film, isn't it?!", "l'été (à Paris) -- c'était_bien", "we'll see ... `ok'"]:
        assert clean_words(sentence) == tokenize(sentence, "words", True)


@pytest.mark.parametrize("pattern", [None, r"^\d_bob_"])
def test_fsdd_reference_splits_like_cnncli(tmp_path, pattern):
    """The standard split and a held-out speaker give both sides the same train / val / test files."""
    from cnncli.data.split import load_splits
    from cnncli.modalities.audio import AudioModality

    for speaker in ("alice", "bob", "carol"):
        for digit in range(10):
            for index in range(12):
                (tmp_path / f"{digit}_{speaker}_{index}.wav").touch()
    overrides = [f"data.root={tmp_path}"] + ([f"data.split.test_pattern={pattern}"] if pattern else [])
    ours = load_splits(load_config(REPO / "recipes" / "fsdd.yaml", overrides), AudioModality)
    module = reference("fsdd")
    theirs = module.list_recordings(tmp_path, pattern or module.STANDARD_TEST)
    for our_part, their_part in zip((ours.train, ours.val, ours.test), theirs):
        assert [Path(sample.locator).name for sample in our_part] == [path.name for path, _ in their_part]
    assert len(ours.test) == (10 * 12 if pattern else 3 * 10 * 5)


@pytest.mark.parametrize("task", ["mr", "sst2"])
def test_text_reference_splits_and_deals_folds_like_cnncli(tmp_path, task):
    """Both sides train on the same sentences in the same order, with the same validation
    (or, for a cross-validation ensemble, the same folds) and test sentences."""
    from cnncli.data.split import load_splits
    from cnncli.modalities.text import TextModality

    (tmp_path / "mr").mkdir()
    (tmp_path / "sst2").mkdir()
    for name in ("pos", "neg"):
        (tmp_path / "mr" / f"rt-polarity.{name}").write_text("".join(f"{name} line {i}\n" for i in range(45)))
    for name, size in (("train", 60), ("dev", 20), ("test", 10)):
        (tmp_path / "sst2" / f"stsa.binary.{name}").write_text("".join(f"{i % 2} {name} {i}\n" for i in range(size)))
    config = load_config(REPO / "recipes" / f"{task}.yaml", [f"data.root={tmp_path / task}"])
    ours = load_splits(config, TextModality)
    module = reference("kim_cnn")
    settings = module.TASKS[task]
    theirs = module.load_task(task, settings.get("rotate", False), tmp_path)
    for our_part, their_part in zip((ours.train, ours.val, ours.test), theirs):
        assert [sample.content for sample in our_part] == [sentence for sentence, _ in their_part]
    if config.train.rotate_val:
        assert ours.folds == module.stratified_folds(theirs[0], module.FOLDS, seed=1)


def test_speaker_rows_hold_out_one_speaker_each():
    rows = [row for row in reference_rows() if row.name.startswith("fsdd-speaker-")]
    assert len(rows) == 5 and all(row.max_seeds == 1 for row in rows)
    for row in rows:
        speaker = row.name.removeprefix("fsdd-speaker-")
        pattern = row.sets[0].split("=", 1)[1]
        assert row.reference[-2:] == ["--test-pattern", pattern]
        assert re.search(pattern, f"7_{speaker}_3.wav") and not re.search(pattern, "7_someone_3.wav")


def test_text_reference_backpropagates_like_cnncli():
    """Padded sentences make max-over-time ties (all-padding windows give the same value); both
    sides must send the gradient the same way, or their training drifts apart bit by bit."""
    config = load_config(REPO / "recipes" / "mr.yaml")
    settings = reference("kim_cnn").TASKS["mr"]
    torch.manual_seed(0)
    ours = kim_network(config.model.blocks, TokenEmbedding(50, settings["dimension"], "rand"), 56)
    torch.manual_seed(0)
    theirs = reference("kim_cnn").KimCNN(50, 2, settings["dimension"], settings["input_dropout"], settings["pad"])
    with torch.no_grad():  # positive biases: all-padding windows tie at the top of max over time
        for network in (ours, theirs):
            for module in network.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.bias.fill_(5.0)
    ids = torch.randint(2, 50, (4, 56))
    ids[:, 6:] = 0
    targets = torch.tensor([0, 1, 1, 0])
    for network in (ours, theirs):
        network.eval()  # no dropout: the same arithmetic on both sides
        torch.nn.functional.cross_entropy(network(ids), targets).backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad), f"gradient of {name} differs"
    for network in (ours, theirs):
        network.train()  # with dropout, and each side dropping the padding it does not need
    torch.manual_seed(1)
    trained_ours = ours(ids)
    torch.manual_seed(1)
    assert torch.equal(trained_ours, theirs(reference("kim_cnn").trim_padding(ids)))


def test_text_reference_deals_the_same_validation_folds():
    samples = [Sample(locator=f"line {i}", label=("pos", "neg")[i % 3 == 0], position=i) for i in range(97)]
    ours = stratified_folds(samples, 10, seed=1)
    theirs = reference("kim_cnn").stratified_folds([(s.locator, s.label) for s in samples], 10, seed=1)
    assert ours == theirs and len(set(ours)) == 10


def test_fsdd_reference_computes_the_pictures_cnncli_computes():
    """Un-augmented: the same log-mel dB below each picture's peak from the same waveforms."""
    from cnncli.modalities.audio import AudioModality

    module = reference("fsdd")
    modality = AudioModality(load_config(REPO / "recipes" / "fsdd.yaml").data.audio)
    generator = torch.Generator().manual_seed(0)
    waves = torch.randn(3, 8000, generator=generator) * torch.linspace(0.001, 0.5, 8000)
    ours, theirs = modality.featurize(waves.unsqueeze(1)), module.log_mel(waves)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-3)


def test_the_long_recording_bench_builds_digits_where_its_truth_says_and_scores_one_to_one(tmp_path):
    """bench/long_recording.py's recording (44.1 kHz stereo, digits over room noise at 10-30 dB
    SNR) holds its digits at the truth's onsets: cnncli's event finder, labels aside, finds them
    all with no false events; and score() matches events to digits one to one."""
    spec = importlib.util.spec_from_file_location("long_recording", REPO / "bench" / "long_recording.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from cnncli.modalities.audio.events import find_events
    from cnncli.modalities.audio.options import AudioOptions

    digits = bench.speaker_digits(REPO / "sample_data" / "audio", "jackson", 6, seed=0)
    truth = bench.build(tmp_path / "long.wav", digits, seed=0, minutes=None)
    assert len(truth) == 6 and soundfile_info(tmp_path / "long.wav") == (44100, 2)
    spans = [span for batch, _ in find_events(str(tmp_path / "long.wav"), AudioOptions(sample_rate=8000),
                                              lambda waves: waves) for span in batch]
    assert len(spans) == len(truth), spans
    events = [{"start": start, "label": row["label"]} for (start, _), row in zip(spans, truth)]
    assert bench.score(events, truth) == {"digits": 6, "events": 6, "found": 6, "recall": 1.0,
                                          "false_events": 0.0, "label_accuracy": 1.0}
    wrong = [dict(event, label="x") for event in events[:3]] + [{"start": -5.0, "label": "1"}]
    assert bench.score(wrong, truth) == {"digits": 6, "events": 4, "found": 3, "recall": 0.5,
                                         "false_events": 0.25, "label_accuracy": 0.0}


def soundfile_info(path) -> tuple[int, int]:
    import soundfile

    info = soundfile.info(str(path))
    return info.samplerate, info.channels
