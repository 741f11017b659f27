from __future__ import annotations

from bookgen.tokenizer import UNK_ID, CharTokenizer, tokenizer_from_json


def test_char_round_trip_and_saved_form():
    tok = CharTokenizer.build(["Hello, world!\n", "Ünïcödé — “quotes”"])
    text = "Hello “wörld” — !"
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_json(tok.to_json(), "char")
    assert again.encode(text) == tok.encode(text)
    assert again.vocab_size == tok.vocab_size == len(set("Hello, world!\nÜnïcödé — “quotes”")) + 1


def test_unknown_characters_map_to_unk_and_are_listed():
    tok = CharTokenizer.build(["abc"])
    assert tok.encode("abzq") == [1, 2, UNK_ID, UNK_ID]
    assert tok.unknown("abzqz") == ["z", "q"]
