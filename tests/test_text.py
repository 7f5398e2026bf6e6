"""Text: sources, encodings, tokens, vocabulary, word vectors, embedding modes, predict inputs, saliency."""

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO

from cnncli.bundle.io import load_bundle, read_info
from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig
from cnncli.data.sources import read_source
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.modalities.text import TextAugment, TextModality, TextOptions
from cnncli.modalities.text.saliency import token_saliency
from cnncli.modalities.text.subwords import MAX_PER_TOKEN, char_ngrams, subword_ids
from cnncli.modalities.text.tokenize import tokenize
from cnncli.modalities.text.vectors import detect_format, load_vectors
from cnncli.modalities.text.vocabulary import PAD_ID, UNK_ID, Vocabulary
from cnncli.nn.model import network_for
from cnncli.recipe.config import load_config
from cnncli.training.train import train
from cnncli.verbs.evaluate import evaluate
from cnncli.verbs.explain import explain_input
from cnncli.verbs.predict import predict

KIM_BLOCKS = [
    {"parallel": [[{"conv": {"channels": 4, "kernel": [k, "full"]}}, {"pool": {"type": "max", "size": "global"}}]
                  for k in (2, 3)]},
    {"dropout": 0.5},
]
VECTORS = {"good": [0.5, 0.25, -0.5, 1.0], "bad": [-1.0, 0.0, 0.75, -0.25], "Film": [0.125, 0.5, 0.5, 0.0]}


def text_data(**more) -> DataConfig:
    return DataConfig(modality="text", **more)


def fitted(sentences, **options) -> TextModality:
    modality = TextModality(TextOptions(**options))
    modality.fit([Sample(f"s{i}", "x", text) for i, text in enumerate(sentences)])
    return modality


# -- sources and encodings ---------------------------------------------------------------------


@pytest.mark.parametrize("name, body", [
    ("reviews.csv", 'label,text\npos,"a fine, warm film"\nneg,dull\n'),
    ("reviews.tsv", "label\ttext\npos\ta fine, warm film\nneg\tdull\n"),
    ("reviews.jsonl", '{"label": "pos", "text": "a fine, warm film"}\n{"label": "neg", "text": "dull"}\n'),
])
def test_manifests_with_a_text_column_hold_the_sentences(tmp_path, name, body):
    (tmp_path / name).write_text(body, encoding="utf-8")
    samples = read_source(tmp_path / name, text_data(), TextModality)
    assert [(s.label, s.content) for s in samples] == [("pos", "a fine, warm film"), ("neg", "dull")]


def test_one_file_per_class_takes_the_label_from_the_name_and_counts_positions(tmp_path):
    (tmp_path / "rt-polarity.pos").write_bytes("a charming caf\xe9 comedy\n\nwarm\n".encode("latin-1"))
    data = text_data(label_regex=r"\.(pos|neg)$", encoding="latin-1")
    samples = read_source(tmp_path / "rt-polarity.pos", data, TextModality)
    assert [(s.label, s.content, s.position) for s in samples] == [("pos", "a charming café comedy", 0),
                                                                  ("pos", "warm", 1)]
    assert samples[1].locator.endswith("rt-polarity.pos:3")  # the line in the file, empty lines counted


def test_mr_split_every_tenth_line_of_each_file_is_test(tmp_path):
    for label in ("pos", "neg"):
        (tmp_path / f"rt-polarity.{label}").write_text("".join(f"{label} line {i}\n" for i in range(20)))
    config = load_config({"data": {"modality": "text", "root": str(tmp_path), "format": "lines",
                                   "train": ["rt-polarity.pos", "rt-polarity.neg"], "label_regex": r"\.(pos|neg)$",
                                   "split": {"test_every": 10, "val_fraction": 0.1}},
                          "model": {"blocks": KIM_BLOCKS}})
    splits = load_splits(config, TextModality)
    assert sorted(s.content for s in splits.test) == ["neg line 0", "neg line 10", "pos line 0", "pos line 10"]
    assert len(splits.train) + len(splits.val) == 36 and len(splits.val) == 4


def test_label_first_lines_are_split_at_the_first_space(tmp_path):
    (tmp_path / "stsa.binary.dev").write_text("1 a stirring , funny film\n0 dull\n", encoding="utf-8")
    samples = read_source(tmp_path / "stsa.binary.dev", text_data(format="labelled_lines"), TextModality)
    assert [(s.label, s.content) for s in samples] == [("1", "a stirring , funny film"), ("0", "dull")]


def test_folder_per_class_reads_each_file_with_the_recipe_encoding(tmp_path):
    for label, text in (("pos", "un caf\xe9 charmant\nsuperbe"), ("neg", "ennuyeux")):
        (tmp_path / label).mkdir()
        (tmp_path / label / "review.txt").write_bytes(text.encode("latin-1"))
    samples = read_source(tmp_path, text_data(), TextModality)
    assert [(s.label, s.content) for s in samples] == [("neg", None), ("pos", None)]
    modality = TextModality(TextOptions(), encoding="latin-1")
    modality.fit(samples)
    assert modality.tokens(samples[1]) == ["un", "café", "charmant", "superbe"]
    restored = TextModality.from_state(json.loads(json.dumps(modality.state_dict())))
    assert restored.encode(samples[1]).tolist()[:4] == modality.encode(samples[1]).tolist()[:4]


def test_bytes_the_encoding_cannot_read_are_one_line_naming_file_line_and_byte(tmp_path):
    path = tmp_path / "rt-polarity.neg"
    path.write_bytes(b"fine\nstill fine\na clich\xe9d plot\n")
    with pytest.raises(CnncliError) as caught:
        read_source(path, text_data(label_regex=r"\.(pos|neg)$"), TextModality)
    message = str(caught.value)
    assert f"{path}:3" in message and "0xe9" in message and "data.encoding=latin-1" in message
    assert "\n" not in message


# -- tokens and vocabulary ---------------------------------------------------------------------


def test_words_tokenizer_is_kims_clean_str():
    assert tokenize("The film's plot, I don't LIKE (at all)!?") == [
        "the", "film", "'s", "plot", ",", "i", "do", "n't", "like", "(", "at", "all", ")", "!", "?"]
    assert tokenize("they've we'll i'd you're caf\xe9") == ["they", "'ve", "we", "'ll", "i", "'d", "you", "'re", "café"]


def test_whitespace_and_character_tokenizers():
    assert tokenize("Hello,  World", "whitespace") == ["hello,", "world"]
    assert tokenize("Hi  yo", "chars", lowercase=False) == ["H", "i", " ", "y", "o"]


def test_vocabulary_keeps_frequent_tokens_and_reserves_pad_and_unk():
    vocabulary = Vocabulary.fit([["a", "b", "a"], ["c", "a", "b"], ["d"]], min_freq=2)
    assert vocabulary.tokens == ["<pad>", "<unk>", "a", "b"]
    assert vocabulary.ids(["b", "zzz", "a"], 5) == [3, UNK_ID, 2, PAD_ID, PAD_ID]
    assert vocabulary.ids(["a", "b", "a"], 2) == [2, 3]
    assert Vocabulary.fit([["a", "b", "a"], ["c"]], max_vocab=3).tokens == ["<pad>", "<unk>", "a"]


def test_vocabulary_is_fitted_on_training_samples_and_round_trips_as_readable_json():
    modality = fitted(["a good film", "a bad film", "good good"], min_freq=1, max_length=6)
    state = json.loads(json.dumps(modality.state_dict()))
    assert state["vocabulary"][:3] == ["<pad>", "<unk>", "good"]
    restored = TextModality.from_state(state)
    unseen = Sample("new", None, "A GOOD, unseen film")
    assert restored.encode(unseen).tolist() == modality.encode(unseen).tolist()
    assert modality.encode(unseen).tolist() == [3, 2, UNK_ID, UNK_ID, 4, PAD_ID]  # good, a, film by frequency


# -- word vectors ------------------------------------------------------------------------------


def write_word2vec_text(path):
    lines = [f"{len(VECTORS)} 4"] + [f"{word} {' '.join(map(str, vector))}" for word, vector in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_word2vec_binary(path):
    body = f"{len(VECTORS)} 4\n".encode()
    for word, vector in VECTORS.items():
        body += word.encode() + b" " + struct.pack("<4f", *vector) + b"\n"
    path.write_bytes(body)
    return path


def write_glove(path):
    path.write_text("".join(f"{word} {' '.join(map(str, vector))}\n" for word, vector in VECTORS.items()))
    return path


@pytest.mark.parametrize("writer, kind", [(write_word2vec_text, "word2vec-text"),
                                          (write_word2vec_binary, "word2vec-binary"), (write_glove, "glove")])
def test_vectors_files_are_detected_and_fill_the_vocabulary_rows(tmp_path, writer, kind):
    path = writer(tmp_path / "vectors")
    assert detect_format(path) == kind
    vocabulary = Vocabulary.fit([["good", "film", "plot"]])
    matrix, found = load_vectors(path, vocabulary, 4)
    assert found == 2  # "good" exactly, "film" through "Film"; "plot" has no vector
    assert matrix[vocabulary.index["good"]].tolist() == VECTORS["good"]
    assert matrix[vocabulary.index["film"]].tolist() == VECTORS["Film"]
    assert matrix[PAD_ID].abs().sum() == 0 and matrix[vocabulary.index["plot"]].abs().max() <= 0.25


def test_vectors_of_another_dimension_name_the_key_to_set(tmp_path):
    path = write_glove(tmp_path / "glove.txt")
    with pytest.raises(CnncliError, match="glove.txt:1: 4-dimensional.*embedding_dim=4"):
        load_vectors(path, Vocabulary.fit([["good"]]), 300)


# -- embedding modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rand", "static", "non-static", "multichannel"])
def test_embedding_modes_build_and_train_a_step(tmp_path, mode):
    vectors = write_word2vec_text(tmp_path / "vectors.txt")
    options = TextOptions(max_length=6, embedding_dim=4, embeddings=mode,
                          vectors=None if mode == "rand" else str(vectors))
    modality = TextModality(options)
    samples = [Sample(f"s{i}", label, text) for i, (label, text) in
               enumerate([("1", "a good film"), ("0", "a bad film"), ("1", "good good plot"), ("0", "bad plot")])]
    modality.fit(samples)
    network = network_for(modality, KIM_BLOCKS, 2)
    inputs = modality.encode_many(samples).tensor
    pictures = network.stem(inputs)
    assert inputs.dtype == torch.long and pictures.shape == (4, 2 if mode == "multichannel" else 1, 6, 4)
    if mode != "rand":
        assert pictures[0, 0, 1].tolist() == VECTORS["good"]  # initialised from the file
    before = {name: tensor.clone() for name, tensor in network.stem.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1.0)
    torch.nn.functional.cross_entropy(network(inputs), torch.tensor([1, 0, 1, 0])).backward()
    optimizer.step()
    after = network.stem.state_dict()
    if mode in ("static", "multichannel"):
        assert torch.equal(after["static.weight"], before["static.weight"])  # frozen really stays frozen
    if mode != "static":
        assert not torch.equal(after["tuned.weight"], before["tuned.weight"])
        assert after["tuned.weight"][PAD_ID].abs().sum() == 0  # padding stays a zero row


def test_static_bundle_predicts_without_the_vectors_file(tmp_path):
    vectors = write_glove(tmp_path / "glove.txt")
    config = load_config(REPO / "recipes" / "text-quickstart.yaml", [
        "train.epochs=2", "data.text.embeddings=static", f"data.text.vectors={vectors}", "data.text.embedding_dim=4"])
    train(config, tmp_path / "bundle")
    info = read_info(tmp_path / "bundle")
    assert info["modality"]["state"]["vocabulary"][:2] == ["<pad>", "<unk>"]
    static_weights = load_bundle(tmp_path / "bundle").network.stem.static.weight
    vectors.unlink()
    bundle = load_bundle(tmp_path / "bundle")
    assert torch.equal(bundle.network.stem.static.weight, static_weights)
    film = bundle.modality.vocabulary.index["film"]
    assert bundle.network.stem.static.weight[film].tolist() == VECTORS["Film"]
    rows = list(predict(bundle, ["a good film", "a bad film"]))
    assert [row.input for row in rows] == ["a good film", "a bad film"]
    assert all(row.error is None and row.label in ("negative", "positive") for row in rows)


# -- augmentation ------------------------------------------------------------------------------


def test_word_dropout_replaces_a_share_of_real_tokens_with_unk_and_never_padding():
    modality = TextModality(TextOptions(), augment=TextAugment(word_dropout=0.5))
    batch = torch.cat([torch.randint(2, 50, (64, 20)), torch.zeros(64, 10, dtype=torch.long)], dim=1)
    first = modality.augment(batch, torch.Generator().manual_seed(1))
    again = modality.augment(batch, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert (first[:, 20:] == PAD_ID).all()
    dropped = (first[:, :20] == UNK_ID).float().mean()
    assert 0.4 < dropped < 0.6
    assert torch.equal(first[first != UNK_ID], batch[first != UNK_ID])


def test_word_crop_keeps_a_contiguous_span_of_each_sentence_at_the_front():
    modality = TextModality(TextOptions(), augment=TextAugment(word_crop=0.5))
    batch = torch.zeros(200, 12, dtype=torch.long)
    batch[:, :10] = torch.arange(2, 12)
    cropped = modality.augment(batch, torch.Generator().manual_seed(0))
    lengths = (cropped != PAD_ID).sum(1)
    assert lengths.min() >= 5 and lengths.max() == 10 and lengths.float().std() > 0
    for row, length in zip(cropped.tolist(), lengths.tolist()):
        assert row[length:] == [PAD_ID] * (12 - length)
        assert row[:length] == list(range(row[0], row[0] + length))  # a span, in order


# -- subwords ----------------------------------------------------------------------------------


def test_character_ngrams_mark_the_word_ends():
    assert char_ngrams("ab", [3, 5]) == ["<ab", "ab>", "<ab>"]
    ids = subword_ids("shadow", [3, 5], buckets=100, first_id=7)
    assert len(ids) == 6 + 5 + 4 and all(7 <= i < 107 for i in ids)
    assert len(subword_ids("incomprehensibilities", [3, 5], 100, 7)) == MAX_PER_TOKEN


def test_subword_ids_are_the_same_in_every_process():
    """Python's own str hash changes per process; a bundle's n-gram rows must not."""
    code = "from cnncli.modalities.text.subwords import subword_ids; print(subword_ids('overshadowed', [3, 5], 1000, 10))"
    outputs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(outputs) == 1


def test_an_unseen_word_is_read_from_the_ngrams_it_shares_with_training_words():
    modality = fitted(["a shadow film", "shadows fall"], max_length=5, embedding_dim=4, subword_buckets=500)
    encode = lambda text: modality.encode(Sample(text, content=text))  # noqa: E731
    ids = encode("overshadowed film")
    assert ids.shape == modality.input_shape == (5, 1 + MAX_PER_TOKEN)
    assert ids[0, 0] == UNK_ID and (ids[0, 1:] >= len(modality.vocabulary)).sum() == MAX_PER_TOKEN
    assert set(ids[0, 1:].tolist()) & set(encode("shadow")[0, 1:].tolist())  # "sha", "had", "dow", ...
    assert (ids[2:] == PAD_ID).all()
    pictures = modality.build_stem()(torch.stack([encode("overshadowed"), encode("zzzz")]))
    assert not torch.allclose(pictures[0, 0, 0], pictures[1, 0, 0])  # two unseen words, two vectors
    assert (pictures[:, :, 1:] == 0).all()  # padding is still a zero row


def test_subword_rows_train_and_the_static_channel_keeps_the_file_vectors(tmp_path):
    vectors = write_word2vec_text(tmp_path / "vectors.txt")
    modality = fitted(["a good film", "a bad film"], max_length=6, embedding_dim=4, embeddings="multichannel",
                      vectors=str(vectors), subword_buckets=50)
    network = network_for(modality, KIM_BLOCKS, 2)
    inputs = torch.stack([modality.encode(Sample(t, content=t)) for t in ("a good film", "a bad film")])
    assert network.stem(inputs)[0, 0, 1].tolist() == VECTORS["good"]
    torch.nn.functional.cross_entropy(network(inputs), torch.tensor([1, 0])).backward()
    changed = network.stem.tuned.weight.grad.abs().sum(1) > 0
    assert changed[len(modality.vocabulary):].any() and not changed[PAD_ID]


def test_word_crop_and_dropout_move_and_hide_each_token_with_its_ngrams():
    modality = TextModality(TextOptions(), augment=TextAugment(word_crop=0.5, word_dropout=0.3))
    batch = torch.zeros(100, 12, 4, dtype=torch.long)
    batch[:, :10, 0] = torch.arange(2, 12)
    batch[:, :10, 1:] = 100 + 10 * batch[:, :10, :1] + torch.arange(3)  # each word's own n-gram ids
    out = modality.augment(batch, torch.Generator().manual_seed(0))
    words = out[..., 0]
    real = (words != PAD_ID) & (words != UNK_ID)
    assert torch.equal(out[real][:, 1:], 100 + 10 * out[real][:, :1] + torch.arange(3))
    assert (out[words == UNK_ID][:, 1:] == 0).all() and (out[words == PAD_ID] == 0).all()
    assert 0.2 < (words == UNK_ID).sum() / (words != PAD_ID).sum() < 0.4
    assert (words != PAD_ID).sum(1).min() >= 5 and (words != PAD_ID).sum(1).float().std() > 0


def test_a_subword_bundle_scores_its_test_split_as_training_did(tmp_path):
    config = load_config(REPO / "recipes" / "text-quickstart.yaml",
                         ["train.epochs=2", "data.text.subword_buckets=300", "augment.word_crop=0.3"])
    outcome = train(config, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.modality.options.subword_buckets == 300
    assert bundle.network.stem.tuned.num_embeddings == len(bundle.modality.vocabulary) + 300
    report = evaluate(bundle)
    assert report["accuracy"] == outcome.metrics["test"]["accuracy"]
    # Its batches are cut to the padding they need, so no FLOP rate is claimed from the full height.
    assert outcome.training["train_flops_per_sample"] is None and "gflops" not in outcome.history[-1]
    rows = list(predict(bundle, ["an overshadowed, charmless film"]))
    assert rows[0].error is None and rows[0].label in ("negative", "positive")


# -- predict and inspect -----------------------------------------------------------------------


def test_predict_inputs_are_sentences_text_files_and_stdin_lines(tmp_path, monkeypatch):
    modality = fitted(["a good film"])
    lines_file = tmp_path / "sentences.txt"
    lines_file.write_text("first one\n\nsecond one\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("dull\n\n  a great film \n"))
    samples = list(modality.expand_inputs(["just a sentence", str(lines_file), "-"]))
    assert [s.content for s in samples] == ["just a sentence", "first one", "second one", "dull", "a great film"]
    assert samples[2].locator == f"{lines_file}:2" and samples[4].locator == "<stdin>:3"


def test_a_sentence_longer_than_a_file_name_may_be_is_a_sentence():
    long = "a long review " * 40  # 560 bytes: the operating system refuses it as a file name
    samples = list(fitted(["a good film"]).expand_inputs([long, "nul\0inside"]))
    assert [s.content for s in samples] == [long, "nul\0inside"]


def test_undecodable_predict_file_becomes_one_error_row_naming_the_byte(tmp_path):
    modality = fitted(["a good film"])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    samples = list(modality.expand_inputs([str(bad), "fine"]))
    encoded = modality.encode_many(samples)
    assert encoded.index == [1] and "0xe9" in encoded.failures[0] and f"{bad}:1" in encoded.failures[0]


def test_token_saliency_scores_each_token_and_draw_writes_a_png(tmp_path):
    torch.manual_seed(0)
    modality = fitted(["a good film", "a bad film"], max_length=8, embedding_dim=6)
    network = network_for(modality, KIM_BLOCKS, 2)
    scores = token_saliency(network, modality.encode(Sample("x", content="A good, unseen film")))
    assert len(scores) == 8 and all(np.isfinite(score) for score in scores) and any(score != 0 for score in scores)
    assert [row["token"] for row in modality.explain(network, Sample("x", content="A good, unseen film"))] == [
        "a", "good", ",", "unseen", "film"]
    rows = modality.explain(network, Sample("x", content="a good film"))
    assert [(row["token"], row["known"]) for row in rows] == [("a", True), ("good", True), ("film", True)]
    modality.draw(Sample("x", content="a good film"), tmp_path / "input.png", network)
    modality.draw(Sample("x", content="a good film"), tmp_path / "plain.png")
    assert (tmp_path / "input.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "plain.png").exists()
    assert png_width(tmp_path / "input.png") > png_width(tmp_path / "plain.png")  # the saliency panel


def test_inspect_input_draws_the_sentence_with_its_saliency_bars(tmp_path):
    torch.manual_seed(0)
    modality = fitted(["a good film", "a bad film"], max_length=8, embedding_dim=6)
    network = network_for(modality, KIM_BLOCKS, 2)
    bundle = SimpleNamespace(modality=modality, network=network, labels=["neg", "pos"], temperature=1.0)
    result = explain_input(bundle, "a good film", tmp_path / "explained")
    modality.draw(Sample("x", content="a good film"), tmp_path / "plain.png")
    assert png_width(tmp_path / "explained" / "input.png") > png_width(tmp_path / "plain.png")
    assert [row["token"] for row in result["explanation"]] == ["a", "good", "film"]


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")


# -- recipes -----------------------------------------------------------------------------------


def test_mr_recipe_reads_the_shared_files_as_latin_1():
    config = load_config(REPO / "recipes" / "mr.yaml")
    assert config.data.encoding == "latin-1" and config.data.split.test_every == 10
    assert Path(config.data.root).resolve() == (REPO / ".." / "shared" / "data" / "mr").resolve()


def test_sst2_recipe_trains_on_other_label_first_files_when_only_paths_change(tmp_path):
    for name, count in (("a.txt", 24), ("b.txt", 6), ("c.txt", 6)):
        lines = [f"{i % 2} {'a truly great film' if i % 2 else 'a dull , boring mess'} number {i}" for i in range(count)]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(REPO / "recipes" / "sst2.yaml", [
        f"data.root={tmp_path}", "data.train=a.txt", "data.val=b.txt", "data.test=c.txt", "train.epochs=2"])
    outcome = train(config, tmp_path / "bundle")
    assert outcome.metrics["test"]["n"] == 6 and read_info(tmp_path / "bundle")["labels"] == ["0", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, floor", [("mr.yaml", 0.77), ("sst2.yaml", 0.815)])
def test_real_data_reaches_the_accepted_test_accuracy(tmp_path, recipe, floor):
    """The goal is on the mean of seeds 0-2, as docs/BENCHMARKS.md reports it: single seeds
    spread by about half a point either way (about 15 minutes per recipe on 2 cores)."""
    scores = [train(load_config(REPO / "recipes" / recipe, [f"train.seed={seed}"]), tmp_path / f"seed{seed}")
              .metrics["test"]["accuracy"] for seed in range(3)]
    assert sum(scores) / len(scores) >= floor, scores
