"""Styles in training: labels from the books, each token's style in its window, a model that
learns each style, the checkpoint's record of them, and exact resume with styles."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import bookgen
from bookgen.checkpoint import load_checkpoint, read_manifest, read_metrics
from bookgen.corpus import Document, number_styles, style_labels
from bookgen.errors import BookgenError
from bookgen.events import Stepped, TrainingInterrupted
from bookgen.report import load_report, style_losses
from bookgen.streams import StreamBatcher, TokenStream
from tests.conftest import TINY_MODEL

AB = "abab abba baab abab\n" * 150  # 3,000 characters of one style
XY = "xyzzy zyx yzx xyzzy\n" * 150  # and of another, sharing only " " and "\n"
STYLED = dict(TINY_MODEL, style_by="folder", preview_length=0)


def shelf(tmp_path: Path) -> Path:
    """books/ab/ab.txt and books/xy/xy.txt: two styles by folder."""
    for name, text in (("ab", AB), ("xy", XY)):
        (tmp_path / "books" / name).mkdir(parents=True)
        (tmp_path / "books" / name / f"{name}.txt").write_text(text, encoding="utf-8")
    return tmp_path / "books"


def document(path: str) -> Document:
    return Document(Path(path).stem, path, "text\n", "utf-8", False)


# --- labels ----------------------------------------------------------------------------------


def test_labels_by_file_folder_or_none():
    books = [document(p) for p in ("b/austen/emma.txt", "b/austen/persuasion.txt", "b/s/f.txt")]
    assert style_labels(books, "file") == ["emma", "persuasion", "f"]
    assert style_labels(books, "folder") == ["austen", "austen", "s"]
    assert style_labels(books, "none") == ["", "", ""]
    # A book named from the catalogue is its own style, wherever it was downloaded to.
    assert style_labels(books, "folder", own_style=["b/s/f.txt"]) == ["austen", "austen", "f"]
    assert number_styles(["s", "austen", "s"]) == (["s", "austen"], [0, 1, 0])


def test_style_by_is_one_checked_setting_and_styles_is_not_an_option(tmp_path: Path):
    with pytest.raises(BookgenError, match="--style-by must be file, folder or none"):
        bookgen.train(shelf(tmp_path), tmp_path / "m", steps=1, style_by="author")
    with pytest.raises(TypeError, match="styles"):
        bookgen.train(tmp_path / "books", tmp_path / "m", steps=1, styles=3)


# --- windows ---------------------------------------------------------------------------------


def test_a_window_carries_each_tokens_style_across_a_book_boundary():
    # Documents of books 0, 2 and 3 (book 1 has no tokens in this part), styles 1, 0, 0, 1.
    stream = TokenStream(
        np.arange(41, dtype=np.uint8), np.array([0, 10, 25]), 41, books=np.array([0, 2, 3])
    )
    styles = stream.document_styles([1, 0, 0, 1])
    assert styles.tolist() == [1, 0, 1]
    batcher = StreamBatcher(stream, batch_size=2, bptt=16, styles=styles)  # rows of 20 tokens
    window = next(batcher.windows())
    assert window.styles.shape == window.inputs.shape == (16, 2)
    # Row 0 reads tokens 0-15: style 1 up to token 9, style 0 from token 10, where it resets.
    assert window.styles[:, 0].tolist() == [1] * 10 + [0] * 6
    assert window.resets[10, 0] and window.styles.dtype == torch.int64
    # Row 1 reads tokens 20-35: book 2 (style 0) to token 24, book 3 (style 1) from 25.
    assert window.styles[:, 1].tolist() == [0] * 5 + [1] * 11
    assert window.rows(slice(1, 2)).styles[:, 0].tolist() == window.styles[:, 1].tolist()
    assert batcher.first_styles().tolist() == [1, 0]
    assert next(StreamBatcher(stream, 2, 16).windows()).styles is None  # one style: none


def test_the_token_cache_records_each_starts_book_and_labels_do_not_retokenize(tmp_path: Path):
    books = shelf(tmp_path)
    # Text of this test's own: the session's token cache may hold the shelf's from another test.
    with (books / "ab" / "ab.txt").open("a", encoding="utf-8") as file:
        file.write("abba " * 7 + "baba\n")
    events: list = []
    bookgen.train(books, tmp_path / "a", steps=2, on_event=events.append, **STYLED)
    again: list = []
    bookgen.train(books, tmp_path / "b", steps=2, on_event=again.append, **TINY_MODEL)
    assert any(type(e).__name__ == "Tokenizing" and e.stage == "tokenizing" for e in events)
    assert not any(type(e).__name__ == "Tokenizing" and e.stage == "tokenizing" for e in again)


# --- training --------------------------------------------------------------------------------


def greedy(model, tokenizer, style: int, length: int = 40) -> str:
    """Greedy text from a style's learned start, no seed (the first input a newline)."""
    model.eval()
    state = model.init_state(1, "cpu", style=torch.tensor([style]))
    token = torch.tensor([[tokenizer.encode("\n")[0]]])
    out = []
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(token, state, style=torch.full((1, 1), style))
            token = logits[-1].argmax(-1, keepdim=True)
            out.append(int(token))
    return tokenizer.decode(out)


def test_a_model_of_two_styles_writes_each_when_given_it_and_records_them(tmp_path: Path):
    out = tmp_path / "m"
    options = dict(STYLED, steps=80, eval_every=80, learning_rate=1e-2)
    result = bookgen.train(shelf(tmp_path), out, **options)
    corpus = read_manifest(out)["corpus"]
    assert corpus["style_by"] == "folder"
    assert [s["name"] for s in corpus["styles"]] == ["ab", "xy"]
    assert sum(s["share"] for s in corpus["styles"]) == pytest.approx(1.0)
    by_style = result.metrics[-1]["val_loss_by_style"]
    assert set(by_style) == {"ab", "xy"}
    # Each style's loss is its tokens' share of the whole: the whole lies between them.
    assert min(by_style.values()) < result.metrics[-1]["val_loss"] < max(by_style.values())
    # Each under its own name: ab's two letters are the easier (0.91 against 1.36 nats here).
    assert by_style["ab"] < by_style["xy"] - 0.2
    report = style_losses(load_report(out))
    assert [(name, loss) for name, _, loss in report] == list(by_style.items())
    loaded = load_checkpoint(out)
    assert loaded.model.config.styles == 2
    ab, xy = (greedy(loaded.model, loaded.tokenizer, style) for style in (0, 1))
    assert set(ab) <= set("ab \n") and set(ab) & set("ab"), ab
    assert set(xy) <= set("xyz \n") and set(xy) & set("xyz"), xy


def test_one_style_runs_have_no_styles(tmp_path: Path):
    bookgen.train(shelf(tmp_path), tmp_path / "m", steps=2, **dict(STYLED, style_by="none"))
    manifest = read_manifest(tmp_path / "m")
    assert manifest["model_config"]["styles"] == 0 and manifest["corpus"]["styles"] == []
    assert "val_loss_by_style" not in read_metrics(tmp_path / "m")[-1]
    assert style_losses(load_report(tmp_path / "m")) == []


def test_a_styled_run_resumes_bit_for_bit(tmp_path: Path):
    books = shelf(tmp_path)
    # Three epochs of 20 windows: epoch starts from the learned starts are resumed through.
    run = dict(STYLED, steps=70, eval_every=20, dropout=0.1, random_seed=5)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    bookgen.train(books, straight, **run)

    def interrupt_at_30(event):
        if isinstance(event, Stepped) and event.step == 30:
            os.kill(os.getpid(), signal.SIGINT)  # saves step 30 and stops

    with pytest.raises(TrainingInterrupted):
        bookgen.train(books, resumed, on_event=interrupt_at_30, **run)
    bookgen.train(books, resumed, resume=True)
    assert exact(resumed) == exact(straight)
    assert [r["step"] for r in read_metrics(resumed)] == [20, 40, 60, 70]
    a, b = (load_checkpoint(folder, which="model").model for folder in (straight, resumed))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def exact(folder: Path) -> list[dict]:
    """The metrics records without the clock's figures."""
    clock = ("elapsed_s", "tokens_per_s")
    return [{k: v for k, v in r.items() if k not in clock} for r in read_metrics(folder)]


def test_a_resume_refuses_books_whose_styles_changed(tmp_path: Path):
    books = shelf(tmp_path)
    bookgen.train(books, tmp_path / "m", steps=2, **STYLED)
    (books / "xy").rename(books / "zz")
    with pytest.raises(BookgenError, match="styles differ from the saved run"):
        bookgen.train(books, tmp_path / "m", resume=True, steps=4)
