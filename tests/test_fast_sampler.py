"""The fast sampling step: the model's own logits and state, the same text for the same seed."""

from __future__ import annotations

import pytest
import torch

from bookgen.model import ModelConfig, RecurrentLM
from bookgen.sampler import SamplingSettings, StepKernel, TextGenerator, choose_token
from bookgen.tokenizer import CharTokenizer

CHARS = list("abcdefghijklmnopqrstuvwxyz .,")


def model_of(cell="lstm", layers=2, embed=None, vocab=len(CHARS) + 1, seed=0) -> RecurrentLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab, cell=cell, layers=layers, hidden_size=48, embed_size=embed, dropout=0.3
    )
    model = RecurrentLM(config).eval()
    with torch.no_grad():  # biases away from zero, so a misplaced one shows
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("embed", [None, 20])
def test_step_gives_the_models_own_logits_and_state(cell, layers, fold, embed):
    model = model_of(cell, layers, embed)
    tokens = torch.randint(
        1, model.config.vocab_size, (40,), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        start = tuple(torch.randn_like(s) * 0.5 for s in model.init_state(1))
        full_logits, full_state = model(tokens.view(-1, 1), start)
    kernel = StepKernel(model, fold=fold)
    slots = (kernel.slot(), kernel.slot())
    state = start
    for index, token in enumerate(tokens.tolist()):
        slot = slots[index % 2]
        kernel.step(token, state, slot)
        state = slot.state
        assert torch.allclose(slot.logits, full_logits[index, 0], atol=1e-5, rtol=0), index
    for ours, theirs in zip(state, full_state, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def slow_stream(model, tokenizer, seed_text, settings, generator) -> str:
    """The plain way: one full forward per token through the model itself."""
    ids = torch.tensor(tokenizer.encode(seed_text)).view(-1, 1)
    with torch.no_grad():
        logits, state = model(ids, model.init_state(1))
        logits = logits[-1, 0]
        out = []
        for _ in range(settings.length):
            token = choose_token(logits, settings, generator)
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state)
            logits = logits[-1, 0]
    return tokenizer.decode(out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fast_stream_writes_what_the_full_forward_writes(cell):
    model = model_of(cell, layers=2)
    tokenizer = CharTokenizer(CHARS)
    writer = TextGenerator(model, tokenizer)
    settings = SamplingSettings(length=150, temperature=1.0, top_k=0, top_p=1.0)
    slow = slow_stream(model, tokenizer, "it was", settings, torch.Generator().manual_seed(7))
    fast = "".join(writer.generate("it was", length=150, temperature=1.0, top_k=0, random_seed=7))
    assert fast == slow and len(fast) == 150


def test_kernel_follows_weights_that_change():
    model = model_of("lstm", layers=1)
    writer = TextGenerator(model, CharTokenizer(CHARS))
    first = writer.step_kernel()
    assert writer.step_kernel() is first  # unchanged weights: kept
    with torch.no_grad():
        model.layers[0].weight_hh_l0.mul_(0.5)  # an optimizer step changes them in place
    assert not first.matches(model)
    second = writer.step_kernel()
    assert second is not first and second.matches(model)


def test_streaming_leaves_the_state_after_exactly_the_text_shown():
    model = model_of("lstm", layers=2)
    tokenizer = CharTokenizer(CHARS)
    writer = TextGenerator(model, tokenizer)
    primed = writer.prime("the ")
    settings = SamplingSettings(length=30, temperature=1.0, top_k=0, top_p=1.0)
    shown = "".join(writer.stream(primed, settings, torch.Generator().manual_seed(3)))
    reread = writer.prime("the " + shown)
    for ours, theirs in zip(primed.state, reread.state, strict=True):
        assert torch.allclose(ours.float(), theirs.float(), atol=1e-5, rtol=0)
    assert torch.allclose(primed.logits, reread.logits, atol=1e-5, rtol=0)
