from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bookgen.cli import app
from bookgen.errors import BookgenError
from bookgen.evaluation import evaluate_texts

runner = CliRunner()


def test_eval_reports_the_shared_currency(trained: Path, tiny_book: Path):
    scores = evaluate_texts([tiny_book], trained)
    assert scores["chars"] == len(tiny_book.read_text().strip()) + 1  # cleaned: one final \\n
    assert scores["tokens"] == scores["chars"]  # a character model: one token per character
    assert scores["perplexity"] == pytest.approx(math.exp(scores["nats_per_token"]))
    expected = scores["nats_per_token"] * scores["tokens"] / (scores["chars"] * math.log(2))
    assert scores["unknown_chars"] == 0
    assert scores["bits_per_char"] == pytest.approx(expected)


def test_unknown_characters_are_charged_8_bits_each(trained: Path, tmp_path: Path):
    text = tmp_path / "odd.txt"
    text.write_text("It was the best of times. ZZZZ QQQQ\n")
    scores = evaluate_texts([text], trained)
    assert scores["unknown_chars"] == 8  # Z and Q never occur in the tiny book
    paid = scores["nats_per_token"] * scores["tokens"] / math.log(2) + 8 * 8
    assert scores["bits_per_char"] == pytest.approx(paid / scores["chars"])


def test_carried_state_is_worth_something(trained: Path, tiny_book: Path):
    carried = evaluate_texts([tiny_book], trained)["nats_per_token"]
    one_token = evaluate_texts([tiny_book], trained, reset_every=1)["nats_per_token"]
    assert one_token > carried + 0.1


def test_eval_cli_json_and_errors(trained: Path, tiny_book: Path):
    result = runner.invoke(app, ["eval", str(tiny_book), "--checkpoint", str(trained), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(scores) == {
        "tokens",
        "chars",
        "nats_per_token",
        "perplexity",
        "bits_per_char",
        "unknown_chars",
    }
    bad = runner.invoke(
        app, ["eval", str(tiny_book), "--checkpoint", str(trained), "--reset-every", "0"]
    )
    assert bad.exit_code == 2 and "--reset-every must be at least 1" in bad.stderr
    with pytest.raises(BookgenError, match="no such file"):
        evaluate_texts([tiny_book.parent / "nope.txt"], trained)
