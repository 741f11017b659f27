"""cuDNN's packed weights: the probe's copy of the model and weight drop keep the layout the run's
model has, so cuDNN reads the weights in place (no per-call copy, no "not part of single
contiguous chunk of memory" warning). A CPU packs nothing: there the layout is built by hand,
and the GPU tests skip."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from bookgen.model import ModelConfig, RecurrentLM, packed_like

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CHUNK_WARNING = "not part of single contiguous chunk"


def pack_by_hand(layer: nn.Module, padding: int = 3) -> None:
    """Make `layer`'s weights views into one buffer, as cuDNN's flatten does on a GPU: here in
    reverse order, with padding before, between and after them."""
    params = list(layer.parameters())[::-1]
    flat = torch.zeros(sum(p.numel() for p in params) + padding * (len(params) + 1))
    offset = padding
    with torch.no_grad():
        for p in params:
            view = flat[offset : offset + p.numel()].view_as(p)
            view.copy_(p)
            p.data = view
            offset += p.numel() + padding


def run_with(layer: nn.Module, weights: dict, cell: str) -> torch.Tensor:
    """The layer's output over a fixed input, from a zero state, with `weights` swapped in."""
    x = torch.linspace(-1, 1, 5 * 2 * 3).view(5, 2, 3)
    h = torch.zeros(1, 2, 4)
    state = (h, torch.zeros_like(h)) if cell == "lstm" else h
    out, _ = functional_call(layer, weights, (x, state))
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_dropped_weight_goes_into_a_copy_of_the_packed_buffer(cell):
    torch.manual_seed(0)
    packed = (nn.LSTM if cell == "lstm" else nn.GRU)(3, 4)
    plain = copy.deepcopy(packed)  # its weights each in their own storage
    pack_by_hand(packed)
    mask = torch.bernoulli(torch.full_like(plain.weight_hh_l0, 0.5)) * 2

    weights = packed_like(packed, {"weight_hh_l0": packed.weight_hh_l0 * mask})
    # Every weight is a view into one fresh buffer, at the place the layer's own weight has.
    buffer = weights["weight_hh_l0"].untyped_storage()
    assert buffer.data_ptr() != packed.weight_hh_l0.untyped_storage().data_ptr()
    assert buffer.nbytes() == packed.weight_hh_l0.untyped_storage().nbytes()
    for name, weight in packed.named_parameters():
        assert weights[name].untyped_storage().data_ptr() == buffer.data_ptr()
        assert weights[name].storage_offset() == weight.storage_offset()
        expected = weight * mask if name == "weight_hh_l0" else weight
        assert torch.equal(weights[name], expected)

    # The layer computes, and learns, exactly what it does with the dropped weight swapped in
    # alone (the path a CPU takes).
    out = run_with(packed, weights, cell)
    reference = run_with(plain, {"weight_hh_l0": plain.weight_hh_l0 * mask}, cell)
    assert torch.equal(out, reference)
    out.square().sum().backward()
    reference.square().sum().backward()
    for (name, p), q in zip(packed.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_weights_that_share_no_buffer_are_not_copied():
    layer = nn.LSTM(3, 4)
    dropped = {"weight_hh_l0": layer.weight_hh_l0 * 0.5}
    assert packed_like(layer, dropped) is dropped


def _no_chunk_warning(work) -> None:
    torch.set_warn_always(True)  # cuDNN warns once per process otherwise
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            work()
    finally:
        torch.set_warn_always(False)
    assert not [w for w in caught if CHUNK_WARNING in str(w.message)]


@CUDA
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_on_a_gpu_reads_packed_weights_and_computes_as_before(cell):
    config = ModelConfig(vocab_size=20, cell=cell, hidden_size=32, dropout=0.0, weight_drop=0.5)
    model = RecurrentLM(config).cuda().train()
    tokens = torch.randint(0, 20, (16, 4), device="cuda")
    torch.manual_seed(1)
    _no_chunk_warning(lambda: model(tokens, model.init_state(4))[0].sum().backward())
    packed_grad = model.layers[0].weight_hh_l0.grad.clone()
    # The same step, the weights unpacked (cuDNN copies them itself): the same figures.
    model.zero_grad()
    for layer in model.layers:
        for p in layer.parameters():
            p.data = p.data.clone()
    torch.manual_seed(1)
    model(tokens, model.init_state(4))[0].sum().backward()
    torch.testing.assert_close(model.layers[0].weight_hh_l0.grad, packed_grad, rtol=0, atol=0)
