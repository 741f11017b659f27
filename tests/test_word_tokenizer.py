from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from bookgen.errors import BookgenError
from bookgen.tokenizer import (
    NEWLINE,
    PARAGRAPH,
    UNK_ID,
    UNK_TOKEN,
    CharTokenizer,
    WordTokenizer,
    tokenizer_from_json,
)

PROSE = (
    "“Don't you think so, Mr. Darcy?” said she—quite calmly. It cost 1,000 pounds; "
    "well-known fact!\n\nNew paragraph.\nSecond line."
)
STRAIGHT = 'He said, "I can\'t." Then he left.'
MORE = (
    "'Yes,' said he, 'I think so.' The girls' room was _very_ small (or so it seemed) and "
    "Elizabeth's aunt--who'd seen it--wasn't pleased... It's 3.5 miles to St. Paul's; "
    "‘Really?’ asked O'Brien. ’Tis true, and 'twas so in '82.\n"
)
TEXTS = [PROSE, STRAIGHT, MORE]
WORDS = WordTokenizer.build(TEXTS, min_count=1)
WORD_IDS = {WORDS.id_to_token(i): i for i in range(WORDS.vocab_size)}  # token -> id


@pytest.mark.parametrize("text", TEXTS)
def test_prose_round_trips_exactly(text):
    assert WORDS.decode(WORDS.encode(text)) == text


def cut(text: str) -> list[str]:
    """The tokens `text` is cut into, through a vocabulary built from it alone (so each is in
    it): the public way, encode and then id_to_token."""
    tokenizer = WordTokenizer.build([text])
    return [tokenizer.id_to_token(i) for i in tokenizer.encode(text)]


def test_words_and_punctuation_are_cut_the_treebank_way():
    assert cut(PROSE) == [
        *("“", "Do", "n't", "you", "think", "so", ",", "Mr.", "Darcy", "?", "”", "said"),
        *("she", "—", "quite", "calmly", ".", "It", "cost", "1,000", "pounds", ";"),
        *("well-known", "fact", "!", PARAGRAPH, "New", "paragraph", ".", NEWLINE),
        *("Second", "line", "."),
    ]
    assert cut(STRAIGHT) == [
        *("He", "said", ",", '"', "I", "ca", "n't", ".", '"', "Then", "he", "left", "."),
    ]
    assert cut("Elizabeth's O'Brien wasn't 'twas U.S. 3.5 --") == [
        *("Elizabeth", "'s", "O'Brien", "was", "n't", "'twas", "U.S.", "3.5", "--"),
    ]


def test_special_tokens_come_first_then_words_by_count_then_alphabet():
    tok = WordTokenizer.build(["b a c a b a d\n\nc"], vocab_size=6, min_count=1)
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == [
        UNK_TOKEN,
        PARAGRAPH,
        NEWLINE,
        "a",
        "b",
        "c",
    ]
    assert tok.encode("a d") == [3, UNK_ID]  # d is fifth by count: left out
    assert WordTokenizer.build(["b a c a b a d"], min_count=2).vocab_size == 3 + 2


def test_rare_words_map_to_unknown_and_are_named_as_written():
    tok = WordTokenizer.build(["the cat sat. the cat sat."], min_count=2, lowercase=True)
    assert tok.encode("The cat sat.") == tok.encode("the CAT sat.")
    assert WORDS.encode("He said") != WORDS.encode("he said")  # built without lowercasing
    assert tok.encode("Zanzibar cat")[0] == UNK_ID
    assert tok.unknown("The Zanzibar cat, Zanzibar? Ok.") == ["Zanzibar", ",", "?", "Ok"]
    assert tok.decode(tok.encode("the Zanzibar cat")) == f"the {UNK_TOKEN} cat"


def test_saved_json_is_a_huggingface_tokenizer(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text(WORDS.to_json(), encoding="utf-8")
    text = PROSE + "\n" + MORE + " unseen words"
    assert Tokenizer.from_file(str(path)).encode(text).ids == WORDS.encode(text)
    again = tokenizer_from_json(path.read_text(encoding="utf-8"), "word")
    assert isinstance(again, WordTokenizer) and again.vocab_size == WORDS.vocab_size
    assert again.decode(again.encode(MORE)) == MORE


def test_bad_settings_and_files_raise_one_clear_error():
    with pytest.raises(BookgenError, match="vocab size"):
        WordTokenizer.build(["a a"], vocab_size=3)
    with pytest.raises(BookgenError, match="min count"):
        WordTokenizer.build(["a a"], min_count=0)
    with pytest.raises(BookgenError, match="occurs 2 times"):
        WordTokenizer.build(["all different words"], min_count=2)
    with pytest.raises(BookgenError, match="could not be read"):
        tokenizer_from_json("{", "word")
    spec = json.loads(WORDS.to_json())
    spec["model"]["vocab"] = {"a": 0, UNK_TOKEN: 1}
    with pytest.raises(BookgenError, match="must start <unk> <p> <nl>"):
        tokenizer_from_json(json.dumps(spec), "word")


def test_stream_decoder_writes_each_token_as_it_comes():
    decoder = WORDS.stream_decoder()
    pieces = [decoder.push(i) for i in WORDS.encode(PROSE)]
    assert pieces[:4] == ["“", "Do", "n't", " you"]
    assert "".join(pieces) + decoder.flush() == PROSE


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, WORDS.vocab_size + 2), max_size=40))
def test_stream_decoder_adds_up_to_decode(ids):
    decoder = WORDS.stream_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == WORDS.decode(ids)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_char_stream_decoder_adds_up_to_decode(text):
    tok = CharTokenizer(["\n", " ", "a", "b", "c"])
    ids = tok.encode(text)
    decoder = tok.stream_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == tok.decode(ids)


# Token sequences a book could contain: sentences of words (with clitics, numbers, dashes),
# in quotes or not, on lines and in paragraphs. Such ids come back from their own text.
WORD = st.one_of(
    st.tuples(
        st.sampled_from(["he", "said", "Darcy", "O'Brien"]),
        st.sampled_from(["", "'s", "n't", "'d"]),
    ),
    st.tuples(st.sampled_from(["Mr.", "1,000", "well-known"]), st.just("")),
)


@st.composite
def sentences(draw) -> list[str]:
    words = draw(st.lists(WORD, min_size=1, max_size=6))
    tokens = [t for word, clitic in words for t in (word, clitic) if t]
    if draw(st.booleans()):
        tokens[1:1] = [draw(st.sampled_from(["—", "--", ",", ";"]))]
    tokens.append(draw(st.sampled_from([".", "!", "?", "..."])))
    opening, closing = draw(st.sampled_from([("", ""), ('"', '"'), ("'", "'"), ("“", "”")]))
    return [t for t in (opening, *tokens, closing) if t]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(sentences(), st.sampled_from(["", PARAGRAPH, NEWLINE])), max_size=6))
def test_book_like_token_sequences_come_back_from_their_text(parts):
    tokens = [t for sentence, end in parts for t in (*sentence, end) if t]
    ids = [WORD_IDS[t] for t in tokens]
    assert WORDS.encode(WORDS.decode(ids)) == ids


def test_hard_wrapped_prose_is_unwrapped_but_verse_keeps_its_lines():
    from bookgen.tokenizer import unwrap_hard_wrapped

    prose_line = "It is a truth universally acknowledged, that a single man in possession"
    prose = "\n".join([prose_line] * 30) + "\n\nNext paragraph.\n"
    unwrapped = unwrap_hard_wrapped(prose)
    assert unwrapped == " ".join([prose_line] * 30) + "\n\nNext paragraph.\n"
    assert len(unwrapped) == len(prose)  # bits per character stay comparable
    verse = "ROMEO:\nBut soft, what light\nthrough yonder window breaks?\n\n" * 20
    assert unwrap_hard_wrapped(verse) == verse


def test_build_defaults_agree_with_the_training_config():
    # bookgen train and WordTokenizer.build must not drift apart (build once defaulted to 2).
    from bookgen.settings import TrainConfig

    defaults = inspect.signature(WordTokenizer.build).parameters
    config = TrainConfig(steps=1)
    for name in ("vocab_size", "min_count", "lowercase"):
        assert defaults[name].default == getattr(config, name), name
