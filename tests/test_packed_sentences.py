"""Kim's text network as prediction runs it: sentences laid end to end (cnncli.modalities.text.packed)."""

import pytest
import torch
from torch import nn

from cnncli.modalities.text.embedding import TokenEmbedding
from cnncli.modalities.text.packed import PackedSentences
from cnncli.nn.blocks import build_blocks
from cnncli.nn.inference import RowProduct, for_inference
from cnncli.nn.model import Network

DIMS, WIDTH, VOCABULARY = 12, 20, 50


def kim(heights: list[int], mode: str = "rand", padding: int | None = None) -> Network:
    branches = [[{"conv": {"channels": 7, "kernel": [height, "full"], "padding": [height - 1 if padding is None
                                                                                   else padding, 0]}},
                 {"pool": {"type": "max", "size": "global"}}] for height in heights]
    specs = [{"dropout": 0.3}, {"parallel": branches}, {"dropout": 0.5}]
    channels = 2 if mode == "multichannel" else 1
    backbone, shape = build_blocks(specs, (channels, WIDTH, DIMS), "model.blocks")
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(shape[0], 3))
    torch.manual_seed(0)
    network = Network(TokenEmbedding(VOCABULARY, DIMS, mode), backbone, classifier, torch.int64)
    for parameter in network.parameters():  # biases well above some windows' sums: the all-zero window counts
        nn.init.uniform_(parameter, -0.5, 0.5)
    with torch.no_grad():
        for table in (network.stem.tuned, network.stem.static):
            if table is not None:
                table.weight[0] = 0  # the padding row, as trained
    return network.eval()


def sentences(lengths: list[int], width: int = WIDTH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), width, dtype=torch.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, VOCABULARY, (length,), generator=generator)
    return ids


@pytest.mark.parametrize("heights", [[3, 4, 5], [5, 3, 4], [2], [1, 3]])
@pytest.mark.parametrize("lengths", [[7], [1, 9, 3, 15, 2], [0, 4], [WIDTH - 1] * 3])
def test_packed_sentences_give_the_unpacked_networks_values(heights, lengths):
    network = kim(heights)
    fast = for_inference(network, torch.device("cpu"))
    assert isinstance(fast.stem, PackedSentences)
    ids = sentences(lengths)
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), network(ids), atol=1e-5, rtol=1e-5)
        cut = ids[:, :max(lengths) + max(heights)]  # as TextModality.inference_batches cuts a batch
        torch.testing.assert_close(fast(cut), network(cut), atol=1e-5, rtol=1e-5)


def test_a_sentence_filling_the_width_or_a_large_batch_runs_unpacked_with_the_same_values(monkeypatch):
    network = kim([3, 4, 5])
    fast = for_inference(network, torch.device("cpu"))
    ids = sentences([WIDTH, 3, 8])  # the first has no padding after it: no all-zero window, whose value is the bias
    packed = []
    monkeypatch.setattr(torch, "segment_reduce", lambda *args, **kwargs: packed.append(1) or real(*args, **kwargs))
    real = torch._C._VariableFunctions.segment_reduce
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), network(ids), atol=1e-5, rtol=1e-5)
        assert not packed
        fast(ids[1:])
        assert len(packed) == 1
        many = sentences([3] * (RowProduct.LARGE // WIDTH + 1))  # more places than packing pays for
        torch.testing.assert_close(fast(many), network(many), atol=1e-5, rtol=1e-5)
        assert len(packed) == 1


@pytest.mark.parametrize("options", [{"mode": "multichannel"}, {"heights": [3], "padding": 0}])
def test_other_text_networks_are_not_packed_and_keep_their_values(options):
    network = kim(options.pop("heights", [3, 4]), **options)
    fast = for_inference(network, torch.device("cpu"))
    assert not any(isinstance(module, PackedSentences) for module in fast.modules())
    ids = sentences([5, 11])
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), network(ids), atol=1e-5, rtol=1e-5)
