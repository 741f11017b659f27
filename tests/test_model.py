from __future__ import annotations

import pytest
import torch

from bookgen.errors import BookgenError
from bookgen.model import ModelConfig, RecurrentLM, detach_state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carried_state_equals_one_long_pass(cell):
    torch.manual_seed(0)
    model = RecurrentLM(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=16)).eval()
    tokens = torch.randint(0, 20, (30, 3))
    whole, _ = model(tokens, model.init_state(3))
    state = model.init_state(3)
    parts = []
    for begin in range(0, 30, 7):
        logits, state = model(tokens[begin : begin + 7], state)
        state = detach_state(state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts), whole, atol=1e-5)


def test_reset_row_matches_a_fresh_start():
    torch.manual_seed(0)
    model = RecurrentLM(ModelConfig(vocab_size=20, hidden_size=16)).eval()
    tokens = torch.randint(0, 20, (12, 2))
    resets = torch.zeros(12, 2, dtype=torch.bool)
    resets[5, 1] = True  # row 1 enters a new book at t=5
    logits, _ = model(tokens, model.init_state(2), resets)
    fresh, _ = model(tokens[5:, 1:2], model.init_state(1))
    assert torch.allclose(logits[5:, 1:2], fresh, atol=1e-5)
    carried, _ = model(tokens[:, 0:1], model.init_state(1))
    assert torch.allclose(logits[:, 0:1], carried, atol=1e-5)  # row 0 untouched


def test_weights_tied_only_when_sizes_match():
    tied = RecurrentLM(ModelConfig(vocab_size=10, hidden_size=8, embed_size=8))
    untied = RecurrentLM(ModelConfig(vocab_size=10, hidden_size=8, embed_size=4))
    assert tied.output.weight is tied.embedding.weight
    assert untied.output.weight is not untied.embedding.weight


def test_config_refuses_bad_values():
    with pytest.raises(BookgenError, match="--cell must be lstm or gru"):
        ModelConfig(vocab_size=10, cell="rnn")
    with pytest.raises(BookgenError, match="dropout"):
        ModelConfig(vocab_size=10, dropout=1.5)


def _capture_layer_io(model: RecurrentLM, index: int) -> tuple[list, list]:
    """Record every input and output of `model.layers[index]` (one call per reset span)."""
    inputs, outputs = [], []

    def hook(module, args, result):
        inputs.append(args[0].detach())
        outputs.append(result[0].detach())

    model.layers[index].register_forward_hook(hook)
    return inputs, outputs


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_between_layers_is_locked_over_time(cell):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=32, dropout=0.5)
    model = RecurrentLM(config).train()
    _, below = _capture_layer_io(model, 0)
    above, _ = _capture_layer_io(model, 1)
    tokens = torch.randint(0, 20, (40, 4))
    resets = torch.zeros(40, 4, dtype=torch.bool)
    resets[17, 2] = True  # a reset splits the run in two: the mask must hold across it
    model(tokens, model.init_state(4), resets)
    # Layer 2's input is layer 1's output times a mask of 0s and 1/(1-p) = 2s, (T, B, H).
    scale = torch.cat(above) / torch.cat(below)
    assert torch.isin(scale.round(decimals=4), torch.tensor([0.0, 2.0])).all()
    assert (scale == scale[0:1]).all()  # one mask per (row, unit), the same at every step
    dropped = (scale[0] == 0).float().mean().item()
    assert 0.3 < dropped < 0.7
    assert not (scale[0] == scale[0, 0:1]).all()  # rows get masks of their own


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_on_the_embedding_and_before_the_output_is_locked_over_time(cell):
    # The README promises one mask per sequence on the embedding's output (the first layer's
    # input) and on the last layer's output (the linear output's input), as between layers.
    # Each mask is read as what arrives divided by what was sent, the sender computed apart:
    # the embedding looked up directly, the last layer's output recorded by a hook.
    # p = 0.25, so a kept unit is scaled by 1/(1-p) = 4/3, which 1/p = 4 or 1 would not pass.
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=32, dropout=0.25)
    model = RecurrentLM(config).train()
    first_inputs, _ = _capture_layer_io(model, 0)
    _, last_outputs = _capture_layer_io(model, 1)
    output_inputs = []
    model.output.register_forward_hook(lambda module, args, result: output_inputs.append(args[0]))
    tokens = torch.randint(0, 20, (40, 4))
    resets = torch.zeros(40, 4, dtype=torch.bool)
    resets[17, 2] = True  # a reset splits the run in two: the masks must hold across it
    model(tokens, model.init_state(4), resets)
    with torch.no_grad():
        embedded = model.embedding(tokens)  # (T, B, E), no dropout in the lookup itself
    at_embedding = torch.cat(first_inputs) / embedded
    (before_output,) = output_inputs  # one call over the whole sequence
    at_output = before_output.detach() / torch.cat(last_outputs)
    for scale in (at_embedding, at_output):  # each (T, B, C)
        # Every ratio is 0 or 4/3; 4/3 to within rounding: x * (1/0.75) / x need not be exact.
        kept = scale != 0
        assert torch.allclose(scale[kept], torch.tensor(4 / 3), rtol=1e-6, atol=0)
        assert torch.equal(kept, kept[0:1].expand_as(kept))  # the same units at every step
        dropped = (~kept[0]).float().mean().item()
        assert 0.1 < dropped < 0.4
        assert not torch.equal(kept[0], kept[0, 0:1].expand_as(kept[0]))  # rows: own masks


def test_no_dropout_in_eval_mode():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, layers=3, hidden_size=16, dropout=0.5)
    model = RecurrentLM(config).eval()
    _, below = _capture_layer_io(model, 1)
    above, _ = _capture_layer_io(model, 2)
    tokens = torch.randint(0, 20, (10, 3))
    first, _ = model(tokens, model.init_state(3))
    second, _ = model(tokens, model.init_state(3))
    assert torch.equal(above[0], below[0])
    assert torch.equal(first, second)
    # The same weights without any dropout give the very same logits: nothing is dropped or
    # scaled anywhere (embedding, between layers, before the output) in eval mode.
    plain = RecurrentLM(ModelConfig(vocab_size=20, layers=3, hidden_size=16, dropout=0.0))
    plain.load_state_dict(model.state_dict())
    assert torch.equal(first, plain.eval()(tokens, plain.init_state(3))[0])
    model.train()
    third, _ = model(tokens, model.init_state(3))
    assert not torch.allclose(first, third)  # the same model does drop units when training


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layers_compute_a_stacked_rnn(cell):
    # In eval mode the per-layer stack is exactly PyTorch's multi-layer RNN with the same
    # weights, and the state holds layer i at index i.
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=16, embed_size=8)
    model = RecurrentLM(config).eval()
    stacked = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(8, 16, num_layers=2)
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            for name, value in layer.named_parameters():
                getattr(stacked, name.replace("_l0", f"_l{index}")).copy_(value)
    tokens = torch.randint(0, 20, (9, 3))
    start = tuple(torch.randn(2, 3, 16) for _ in model.init_state(3))
    logits, state = model(tokens, start)
    hx = start if cell == "lstm" else start[0]
    out, expected = stacked(model.embedding(tokens), hx)
    expected = expected if cell == "lstm" else (expected,)
    assert torch.allclose(logits, model.output(out), atol=1e-5)
    assert len(state) == len(expected)
    for got, want in zip(state, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    parts = (model.embedding, stacked, model.output)  # untied here: embed 8, hidden 16
    assert model.parameter_count() == sum(p.numel() for m in parts for p in m.parameters())


@pytest.mark.parametrize("cell,count", [("lstm", 2), ("gru", 1)])
def test_state_shapes_for_two_layers(cell, count):
    model = RecurrentLM(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=16))
    state = model.init_state(5)
    assert [tuple(s.shape) for s in state] == [(2, 5, 16)] * count
    resets = torch.zeros(7, 5, dtype=torch.bool)
    resets[3, 4] = True
    logits, state = model(torch.randint(0, 20, (7, 5)), state, resets)
    assert logits.shape == (7, 5, 20)
    assert [tuple(s.shape) for s in state] == [(2, 5, 16)] * count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reset_row_matches_a_fresh_start_with_two_layers(cell):
    torch.manual_seed(0)
    model = RecurrentLM(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=16)).eval()
    tokens = torch.randint(0, 20, (12, 3))
    resets = torch.zeros(12, 3, dtype=torch.bool)
    resets[5, 1] = True  # row 1 enters a new book at t=5, row 2 at t=0 and t=9
    resets[0, 2] = resets[9, 2] = True
    start = tuple(torch.randn_like(s) for s in model.init_state(3))  # a carried state
    logits, state = model(tokens, start, resets)
    fresh, fresh_state = model(tokens[5:, 1:2], model.init_state(1))
    assert torch.allclose(logits[5:, 1:2], fresh, atol=1e-5)
    for got, want in zip(state, fresh_state, strict=True):
        assert torch.allclose(got[:, 1:2], want, atol=1e-5)  # both layers' state
    fresh, _ = model(tokens[9:, 2:3], model.init_state(1))
    assert torch.allclose(logits[9:, 2:3], fresh, atol=1e-5)
    carried, _ = model(tokens[:, 0:1], tuple(s[:, 0:1] for s in start))
    assert torch.allclose(logits[:, 0:1], carried, atol=1e-5)  # row 0 untouched


def test_parameter_names():
    model = RecurrentLM(ModelConfig(vocab_size=10, hidden_size=8))
    assert set(model.state_dict()) == {
        "embedding.weight",
        "layers.0.weight_ih_l0",
        "layers.0.weight_hh_l0",
        "layers.0.bias_ih_l0",
        "layers.0.bias_hh_l0",
        "output.weight",
        "output.bias",
    }


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_masks_the_recurrent_matrix_while_training_only(cell):
    torch.manual_seed(0)
    plain = RecurrentLM(ModelConfig(vocab_size=20, cell=cell, hidden_size=16, dropout=0.0))
    config = ModelConfig(vocab_size=20, cell=cell, hidden_size=16, dropout=0.0, weight_drop=0.5)
    dropped = RecurrentLM(config)
    dropped.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 20, (12, 3))
    reference, _ = plain.eval()(tokens, plain.init_state(3))
    evaluated, _ = dropped.eval()(tokens, dropped.init_state(3))
    assert torch.equal(reference, evaluated)  # evaluation reads the whole matrix
    before = dropped.layers[0].weight_hh_l0.detach().clone()
    trained, _ = dropped.train()(tokens, dropped.init_state(3))
    assert not torch.allclose(trained, reference)
    # The first step reads only the input side (the state is zero): the same as without drop.
    assert torch.allclose(trained[0], reference[0], atol=1e-6)
    trained.sum().backward()
    assert torch.equal(dropped.layers[0].weight_hh_l0.detach(), before)  # the parameter is kept
    assert dropped.layers[0].weight_hh_l0.grad.abs().sum() > 0  # and learns through the copy
    with pytest.raises(BookgenError, match=r"weight drop must be in \[0, 1\)"):
        ModelConfig(vocab_size=20, weight_drop=1.0)
