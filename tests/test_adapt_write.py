"""Writing after adapting: `generate(adapt_on=)`, `TextGenerator.adapted`, `bookgen sample
--adapt-on`, and chat's --adapt with /undo and /reset, on tiny models.

Every "the same text" check here is against one forward pass per token through the model
itself (`written_by_forward`), never against the fast step kernel under test.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import bookgen
from bookgen import story as story_module
from bookgen.adapt import Adapter
from bookgen.cli import app
from bookgen.errors import BookgenError
from bookgen.interactive import run_chat
from bookgen.sampler import SamplingSettings, TextGenerator, choose_token
from bookgen.settings import AdaptSettings
from bookgen.story import Story
from bookgen.tokenizer import CharTokenizer
from tests.conftest import TINY_BOOK, TINY_MODEL
from tests.test_adapt import folder_hash
from tests.test_styles_write import ALPHABET, STYLES, styled_model

runner = CliRunner()

# Invented names in the tiny book's alphabet (Dickens' opening has none of them).
NAMES = ["Dolmarith", "Lespowy", "Ibeldun", "Lorwick"]
PASSAGE = "Dolmarith Lespowy met Ibeldun at Lorwick, and Lespowy bowed.\n"
# Strong enough for a 32-unit model to learn a passage in a few segments.
STRONG = AdaptSettings(adapt_lr=1e-2)


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained once for the module; no test changes its folder."""
    folder = tmp_path_factory.mktemp("adapt-write")
    book = folder / "tiny.txt"
    book.write_text(TINY_BOOK, encoding="utf-8")
    settings = {**TINY_MODEL, "learning_rate": 0.03, "warmup_steps": 5}
    bookgen.train(book, folder / "model", steps=40, eval_every=40, **settings)
    return folder / "model"


def weights_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same_weights(model, weights: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


@torch.no_grad()
def name_nats(model, tokenizer, text: str, name: str) -> float:
    """Mean nats of the characters of `name`'s occurrences in `text`, read from a zero state
    (the first character of each occurrence left out: the name is known only once begun)."""
    ids = torch.tensor(tokenizer.encode(text)).view(-1, 1)
    logits, _ = model(ids, model.init_state(1))
    nats = F.cross_entropy(logits[:-1, 0], ids[1:, 0], reduction="none")  # nats[i]: ids[i + 1]
    picked = [
        nats[start + offset - 1]
        for start in range(len(text))
        if text.startswith(name, start)
        for offset in range(1, len(name))
    ]
    return float(torch.stack(picked).mean())


def written_by_forward(writer: TextGenerator, seed: str, length: int, random_seed: int, style):
    """What the model writes by one forward pass per token (temperature 1, no guard)."""
    model, settings = writer.model, SamplingSettings(length=length, temperature=1.0, max_copy=0)
    generator = torch.Generator().manual_seed(random_seed)
    batch_style = style[None] if style is not None else None
    with torch.no_grad():
        ids = torch.tensor(writer.tokenizer.encode(seed)).view(-1, 1)
        state = model.init_state(1, style=batch_style)
        logits, state = model(ids, state, style=batch_style)
        out = []
        for _ in range(length):
            token = choose_token(logits[-1, 0], settings, generator)
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state, style=batch_style)
    return writer.tokenizer.decode(out)


def fast(writer: TextGenerator, seed: str, random_seed: int, style=None, **adapting) -> str:
    pieces = writer.generate(
        seed, length=60, temperature=1.0, max_copy=0, random_seed=random_seed, style=style,
        **adapting,
    )  # fmt: skip
    return "".join(pieces)


# --- generate(adapt_on=) ----------------------------------------------------------------------


def test_adapting_on_a_passage_teaches_its_invented_names(trained):
    writer = bookgen.load(trained)
    adapted = writer.adapted(PASSAGE * 4, STRONG)
    for name in NAMES:
        before = name_nats(writer.model, writer.tokenizer, PASSAGE, name)
        after = name_nats(adapted.model, writer.tokenizer, PASSAGE, name)
        assert after < before - 0.05, (name, before, after)


def test_generate_adapt_on_leaves_the_writer_and_the_checkpoint_as_they_were(trained):
    hashed = folder_hash(trained)
    writer = bookgen.load(trained)
    trained_weights = weights_of(writer.model)
    plain = fast(writer, "It was", 3)
    adapted = fast(writer, "It was", 3, adapt_on=PASSAGE * 2, adapt_lr=1e-2)
    assert adapted != plain  # the adapted weights wrote it
    assert same_weights(writer.model, trained_weights)
    assert fast(writer, "It was", 3) == plain  # the next call writes unadapted
    assert folder_hash(trained) == hashed


def test_adapt_on_with_lr_0_writes_what_the_trained_model_writes(trained):
    writer = bookgen.load(trained)
    assert fast(writer, "It", 4, adapt_on=PASSAGE, adapt_lr=0.0) == fast(writer, "It", 4)


def test_adapt_settings_without_a_text_are_refused(trained):
    writer = bookgen.load(trained)
    with pytest.raises(BookgenError, match="adapt_on"):
        writer.generate("It", adapt_lr=1e-2)
    with pytest.raises(BookgenError, match="adapt-decay"):
        writer.generate("It", adapt_on=PASSAGE, adapt_decay=2.0)


def test_generate_adapt_on_in_a_style_writes_what_the_forward_path_writes():
    writer = TextGenerator(styled_model(), CharTokenizer(ALPHABET), styles=STYLES)
    style = torch.tensor([0.4, 0.6])
    text = "ab ba xy yx " * 8
    written = fast(writer, "ab", 6, style=style, adapt_on=text, adapt_lr=3e-2)
    adapted = writer.adapted(text, adapt_lr=3e-2, style=style)
    assert not same_weights(adapted.model, weights_of(writer.model))
    assert written == written_by_forward(adapted, "ab", 60, 6, style)
    assert written != fast(writer, "ab", 6, style=style)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_fast_step_follows_weights_adapted_in_place(cell):
    """The step kernel folds the weights it was built from; after adapting in place (as chat
    does) it must be rebuilt, and then write what the forward path writes."""
    writer = TextGenerator(styled_model(cell), CharTokenizer(ALPHABET), styles=STYLES)
    style = torch.tensor([1.0, 0.0])
    before = fast(writer, "ab", 6, style=style)  # builds and keeps a kernel
    adapter = Adapter(writer.model, AdaptSettings(adapt_lr=3e-2))
    writer.read_adapting("xy yx xx yy " * 8, adapter, style=style)
    after = fast(writer, "ab", 6, style=style)
    assert after != before
    assert after == written_by_forward(writer, "ab", 60, 6, style)


# --- bookgen sample --adapt-on ----------------------------------------------------------------


def test_sample_adapt_on_from_the_cli_in_any_encoding(trained, tmp_path):
    hashed = folder_hash(trained)
    utf8, utf16 = tmp_path / "mine.txt", tmp_path / "mine-utf16.txt"
    utf8.write_text(PASSAGE * 2, encoding="utf-8")
    utf16.write_bytes((PASSAGE * 2).encode("utf-16"))
    common = ["sample", "--checkpoint", trained, "--seed", "It was", "--length", 40]
    common += ["--random-seed", 5, "--max-copy", 0]
    plain = run(*common)
    adapted = run(*common, "--adapt-on", utf8, "--adapt-lr", 1e-2)
    assert plain.exit_code == 0 and adapted.exit_code == 0, adapted.output
    assert adapted.stdout.startswith("It was")
    assert adapted.stdout != plain.stdout
    assert run(*common, "--adapt-on", utf16, "--adapt-lr", 1e-2).stdout == adapted.stdout
    assert folder_hash(trained) == hashed


@pytest.mark.parametrize(
    "what, message", [("missing", "no such file"), ("empty", "empty"), ("lr alone", "need")]
)
def test_sample_adapt_on_refuses_in_one_line(trained, tmp_path, what, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    extra = {
        "missing": ["--adapt-on", tmp_path / "nowhere.txt"],
        "empty": ["--adapt-on", empty],
        "lr alone": ["--adapt-lr", 0.01],
    }[what]
    result = run("sample", "--checkpoint", trained, *extra)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert "Traceback" not in result.output


def test_sample_help_teaches_adapt_on():
    text = run("sample", "--help", env={"COLUMNS": "200"}).output
    assert "--adapt-on" in text and "--adapt-lr" in text and "--adapt-decay" in text
    assert "checkpoint is never changed" in " ".join(text.split())


# --- chat --adapt -----------------------------------------------------------------------------


def adapting_story(trained: Path, **kwargs) -> Story:
    settings = SamplingSettings(length=20, max_copy=0)
    return Story(bookgen.load(trained), settings, random_seed=1, adapt=STRONG, **kwargs)


def test_chat_adapts_each_turn_and_undo_restores_the_exact_weights(trained):
    story = adapting_story(trained)
    model = story.writer.model
    trained_weights = weights_of(model)
    "".join(story.turn("Dolmarith met"))
    first, first_squares = weights_of(model), [s.clone() for s in story.adapter.squares]
    assert not same_weights(model, trained_weights)
    "".join(story.turn(" Lespowy"))
    assert not same_weights(model, first)  # learned from the continuation and " Lespowy"
    story.undo()
    assert same_weights(model, first)
    assert all(torch.equal(a, b) for a, b in zip(story.adapter.squares, first_squares, strict=True))
    story.undo()
    assert same_weights(model, trained_weights)


def test_chat_reset_restores_the_trained_weights(trained):
    hashed = folder_hash(trained)
    story = adapting_story(trained)
    trained_weights = weights_of(story.writer.model)
    for text in ("Dolmarith met", " Lespowy", ""):
        "".join(story.turn(text))
    story.reset()
    assert same_weights(story.writer.model, trained_weights)
    assert story.adapter.steps == 0
    assert folder_hash(trained) == hashed


def test_chat_learns_from_the_users_text_and_the_models_continuation(trained):
    """Turn 2 learns from the model's continuation and the user's new text, read from the state
    after turn 1's text, where adapting stopped: the weights are those of an Adapter reading
    the same texts so, by hand."""
    story = adapting_story(trained)
    continuation = "".join(story.turn("Dolmarith met"))
    "".join(story.turn(" Lespowy"))
    by_hand = bookgen.load(trained)
    adapter = Adapter(by_hand.model, STRONG)
    primed = by_hand.read_adapting("Dolmarith met", adapter)
    by_hand.read_adapting(continuation + " Lespowy", adapter, primed)
    assert same_weights(story.writer.model, weights_of(by_hand.model))


def test_chat_undo_goes_back_a_bounded_number_of_turns(trained, monkeypatch):
    monkeypatch.setattr(story_module, "ADAPT_UNDO", 2)
    story = adapting_story(trained)
    for text in ("It", " was", " the"):
        "".join(story.turn(text))
    story.undo()
    story.undo()
    with pytest.raises(BookgenError, match="goes back 2 turns at most"):
        story.undo()


def test_chat_help_and_reset_say_adapting_is_on(trained):
    story = adapting_story(trained)
    lines = iter(["It was", "/help", "/reset", "/quit"])
    out = io.StringIO()
    run_chat(story, lambda prompt: next(lines), out, interactive=False)
    shown = out.getvalue()
    assert "Adapting is on" in shown
    assert "the trained weights" in shown


def test_chat_adapt_from_the_cli(trained):
    hashed = folder_hash(trained)
    result = run(
        "chat", "--checkpoint", trained, "--adapt", "--adapt-lr", 0.01, "--length", 10,
        input="It was\n/undo\n/quit\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "undone" in result.output
    assert folder_hash(trained) == hashed
    refused = run("chat", "--checkpoint", trained, "--adapt-lr", 0.01, input="/quit\n")
    assert refused.exit_code == 2 and "need --adapt" in refused.output


def test_ctrl_c_while_adapting_leaves_the_weights_as_they_were(trained, monkeypatch):
    story = adapting_story(trained)
    "".join(story.turn("It was"))
    weights, turns = weights_of(story.writer.model), len(story.snapshots)
    learn = Adapter.learn
    calls = []

    def ctrl_c_on_the_second_step(self, loss):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        learn(self, loss)

    monkeypatch.setattr(Adapter, "learn", ctrl_c_on_the_second_step)
    with pytest.raises(KeyboardInterrupt):
        story.turn(" the best of times, it was the worst of times, it was the age of" * 2)
    assert len(calls) == 2  # one step was taken, and taken back
    assert same_weights(story.writer.model, weights)
    assert len(story.snapshots) == turns
