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
