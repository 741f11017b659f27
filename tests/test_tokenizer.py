from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bookgen.tokenizer import UNK_ID, CharTokenizer, tokenizer_from_json


def test_char_round_trip_and_saved_form():
    tok = CharTokenizer(sorted(set("Hello, world!\nÜnïcödé — “quotes”")))
    text = "Hello “wörld” — !"
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_json(tok.to_json(), "char")
    assert again.encode(text) == tok.encode(text)
    assert again.vocab_size == tok.vocab_size == len(set("Hello, world!\nÜnïcödé — “quotes”")) + 1


def test_unknown_characters_map_to_unk_and_are_listed():
    tok = CharTokenizer(["a", "b", "c"])
    assert tok.encode("abzq") == [1, 2, UNK_ID, UNK_ID]
    assert tok.unknown("abzqz") == ["z", "q"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.text())
def test_char_round_trip_for_covered_text(train_text: str, probe: str):
    tokenizer = CharTokenizer(sorted(set(train_text)))
    covered = "".join(c for c in probe if c in set(train_text)) or train_text
    assert tokenizer.decode(tokenizer.encode(covered)) == covered
