"""Tokenizers: text <-> token ids, one protocol for every level.

A tokenizer is built from the *training* text only and saved inside the checkpoint as
`tokenizer.json`, so sampling never needs the corpus again. Id 0 is always the unknown token:
text the vocabulary does not cover (a character never seen in training, say in a seed) maps to
it instead of crashing, and samplers mask it so it is never written.

Generated text is shown while it is written, so every tokenizer also has a `stream_decoder()`:
push ids one at a time, print what comes back, and the pieces add up to `decode(ids)`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Protocol

from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from bookgen.errors import BookgenError
from bookgen.segment import SEGMENTERS, choose_segmenter, segment

UNK_ID = 0


class Tokenizer(Protocol):
    """What every level provides. `decode(encode(t)) == t` for any text the vocabulary covers
    (for words, up to the spacing within a line: see `WordStreamDecoder`)."""

    level: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def unknown(self, text: str) -> list[str]:
        """The pieces of `text` the vocabulary does not cover (in order, without repeats)."""
        ...

    def unknown_chars(self, text: str) -> int:
        """How many characters of `text` fall in pieces the vocabulary does not cover."""
        ...

    def to_json(self) -> str: ...

    def stream_decoder(self) -> StreamDecoder: ...


class StreamDecoder(Protocol):
    """Incremental `decode`: `"".join(push(i) for i in ids) + flush() == decode(ids)`."""

    def push(self, token_id: int) -> str:
        """Take the next id; return the text that can be shown now."""
        ...

    def flush(self) -> str:
        """Return whatever is still held back, at the end of the text."""
        ...


class CharTokenizer:
    """One token per Unicode character of the cleaned text."""

    level = "char"
    unk_text = "\ufffd"

    def __init__(self, alphabet: Sequence[str]) -> None:
        if len(set(alphabet)) != len(alphabet) or any(len(c) != 1 for c in alphabet):
            raise BookgenError("character vocabulary must be distinct single characters")
        self.alphabet = list(alphabet)  # the characters it knows: alphabet[i] has id i + 1
        # Id 0 is the unknown token; real characters start at 1.
        self._ids = {c: i + 1 for i, c in enumerate(self.alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 1

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(c, UNK_ID) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        alphabet = self.alphabet
        return "".join(alphabet[i - 1] if 0 < i <= len(alphabet) else self.unk_text for i in ids)

    def unknown(self, text: str) -> list[str]:
        return list(dict.fromkeys(c for c in text if c not in self._ids))

    def unknown_chars(self, text: str) -> int:
        ids = self._ids
        return sum(1 for c in text if c not in ids)

    def to_json(self) -> str:
        # Saved as "chars", the key checkpoints have always held.
        return json.dumps({"level": "char", "chars": self.alphabet}, ensure_ascii=False)

    def stream_decoder(self) -> CharStreamDecoder:
        return CharStreamDecoder(self)


class CharStreamDecoder:
    """Characters never change once written, so nothing is held back."""

    def __init__(self, tokenizer: CharTokenizer) -> None:
        self._decode = tokenizer.decode

    def push(self, token_id: int) -> str:
        return self._decode([token_id])

    def flush(self) -> str:
        return ""

    def __deepcopy__(self, memo: dict) -> CharStreamDecoder:
        return self  # it has no state of its own


# --- words ---------------------------------------------------------------------------------

UNK_TOKEN = "<unk>"
PARAGRAPH = "<p>"  # one or more blank lines: a new paragraph
NEWLINE = "<nl>"  # a line break inside a paragraph (verse, letters, hard-wrapped books)
SPECIAL_TOKENS = (UNK_TOKEN, PARAGRAPH, NEWLINE)  # ids 0, 1, 2; words start at 3
SEGMENTER_FIELD = "segmenter"  # in the JSON's "model", for Chinese and Japanese (see to_json)

# How prose is cut into words, Penn Treebank style: punctuation apart, "don't" -> "do" "n't",
# "Darcy's" -> "Darcy" "'s"; but "Mr.", "U.S.", "1,000", "3.5", "well-known", "O'Brien", "'tis"
# and "'82" stay whole. At each position the first alternative that matches wins. Apostrophes
# may be straight or curly. The pattern is saved in the tokenizer JSON, so changing it here
# never changes how an existing checkpoint reads text.
_NOT = r"(?i:['’]?n['’]t)\b"  # don't -> do n't; sha'n't -> sha 'n't
_CLITIC = r"['’](?i:s|m|d|re|ve|ll)\b"
_ELISION = r"['’](?:(?i:tis|twas|twere|twill|twould|em|neath|twixt|tween|gainst)|\p{N}\p{N})\b"
_ABBREVIATION = (
    r"(?i:mr|mrs|ms|dr|st|jr|sr|messrs|mme|mlle|prof|rev|capt|lieut|col|sgt|hon|esq|vs|etc|viz)"
    r"\.(?!\p{L})|&c\."
)
_LETTERS = rf"(?:(?!{_NOT})[\p{{L}}\p{{M}}\p{{N}}])+"  # stops before a final "n't"
# What may join two runs of letters into one word: a hyphen, an apostrophe that does not start
# a clitic, or a separator inside a number (1,000 3.5 10:30 1/2).
_JOIN = r"(?:-|['’](?!(?i:s|m|d|re|ve|ll)\b)|(?<=\p{N})[.,:/](?=\p{N}))"
_WORD_PATTERN = "|".join(
    [
        f"{PARAGRAPH}|{NEWLINE}",
        _NOT,
        _CLITIC,
        _ELISION,
        _ABBREVIATION,
        r"(?:\p{L}\.){2,}",  # U.S. i.e. A.M.
        rf"{_LETTERS}(?:{_JOIN}{_LETTERS})*",
        r"[—–―]+",  # a dash, or a run of them
        r"([^\p{L}\p{M}\p{N}\s'’\"_])\1+",  # a run of one mark: ... -- !!! ***
        r"\S",  # any other mark on its own
    ]
)


def _line_structure(lowercase: bool) -> normalizers.Normalizer:
    """Line structure becomes tokens: a blank line is <p>, another line end <nl>."""
    steps = [normalizers.Lowercase()] if lowercase else []
    steps += [
        normalizers.Replace(Regex(r"[^\S\n]*\n(?:[^\S\n]*\n)+"), f" {PARAGRAPH} "),
        normalizers.Replace("\n", f" {NEWLINE} "),
    ]
    return normalizers.Sequence(steps)


def _word_pipeline(lowercase: bool) -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    """Line structure becomes tokens, then text is cut at whitespace and by `_WORD_PATTERN`."""
    splitter = pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated")
    return (
        _line_structure(lowercase),
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), splitter]),
    )


def _segmented_pipeline(
    lowercase: bool,
) -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    """What the JSON of a segmented tokenizer gives HuggingFace on its own (`from_file`): text
    whose words are already cut and joined by spaces. bookgen never runs it: the segmenter
    cuts the words, and spaces are tokens too (see `_segmented`)."""
    return _line_structure(lowercase), pre_tokenizers.WhitespaceSplit()


def _lowercases(tokenizer: HFTokenizer) -> bool:
    normalizer = tokenizer.normalizer
    return normalizer is not None and normalizer.normalize_str("A") == "a"


class WordTokenizer:
    """Words and punctuation, on a HuggingFace `tokenizers` WordLevel model.

    The vocabulary is the unknown token, the paragraph and newline tokens, then the words of the
    training text by descending count (ties in code point order). Decoding writes prose with the
    spacing a person would use; see `WordStreamDecoder`.

    Chinese and Japanese are cut by a `segmenter` (see segment.py) instead of the pattern: then
    spaces are tokens too, and decoding joins the tokens as they are (`JoinedStreamDecoder`).
    """

    level = "word"
    unk_text = UNK_TOKEN

    def __init__(self, tokenizer: HFTokenizer, segmenter: str | None = None) -> None:
        vocab = tokenizer.get_vocab()
        specials_first = all(vocab.get(t) == i for i, t in enumerate(SPECIAL_TOKENS))
        if not specials_first or sorted(vocab.values()) != list(range(len(vocab))):
            raise BookgenError("not a bookgen word tokenizer: it must start <unk> <p> <nl>")
        if segmenter is not None and segmenter not in SEGMENTERS:
            raise BookgenError(f"unknown word segmenter {segmenter!r} (bookgen knows {SEGMENTERS})")
        self._tokenizer = tokenizer
        self._tokens = sorted(vocab, key=vocab.__getitem__)  # id -> token
        self.segmenter = segmenter
        self._ids = vocab  # token -> id, for segmented text (HF's pattern does not apply)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        vocab_size: int = 20000,
        min_count: int = 1,
        lowercase: bool = False,
    ) -> WordTokenizer:
        """Count the words of `texts`; keep the `vocab_size` most frequent, counting specials."""
        if vocab_size <= len(SPECIAL_TOKENS):
            raise BookgenError(
                f"vocab size must be more than {len(SPECIAL_TOKENS)}, not {vocab_size}"
            )
        if min_count < 1:
            raise BookgenError(f"min count must be 1 or more, not {min_count}")
        tokenizer = HFTokenizer(WordLevel({UNK_TOKEN: UNK_ID}, unk_token=UNK_TOKEN))
        texts = iter(texts)
        first = next(texts, "")
        # The first book decides: a corpus is one language, and books are read one at a time.
        segmenter = choose_segmenter(first)
        pipeline = _word_pipeline if segmenter is None else _segmented_pipeline
        tokenizer.normalizer, tokenizer.pre_tokenizer = pipeline(lowercase)
        counts: Counter[str] = Counter()
        for text in itertools.chain([first], texts):
            if segmenter is None:
                counts.update(_pieces(tokenizer, unwrap_hard_wrapped(text)))
            else:
                counts.update(_segmented(tokenizer, segmenter, text))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        words = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        if not words:
            raise BookgenError(f"no word occurs {min_count} times or more: lower the minimum count")
        vocab = [*SPECIAL_TOKENS, *words[: vocab_size - len(SPECIAL_TOKENS)]]
        tokenizer.model = WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=UNK_TOKEN)
        return cls(tokenizer, segmenter)

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        try:
            data = json.loads(text)
            segmenter = data["model"].get(SEGMENTER_FIELD) if "model" in data else None
            wrapped = "segmenter" in data  # as bookgen wrote a segmented one before (see to_json)
            if wrapped:
                segmenter, text = data["segmenter"], json.dumps(data["tokenizer"])
            tokenizer = HFTokenizer.from_str(text)
        except Exception as error:  # tokenizers raises plain Exceptions for malformed JSON
            raise BookgenError(f"the word tokenizer JSON could not be read: {error}") from None
        if wrapped:  # it had no pipeline of its own for from_file: give it today's
            tokenizer.normalizer, tokenizer.pre_tokenizer = _segmented_pipeline(
                _lowercases(tokenizer)
            )
        return cls(tokenizer, segmenter)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def encode(self, text: str) -> list[int]:
        if self.segmenter is not None:
            return self._segmented_ids(text)[0]
        return self._tokenizer.encode(unwrap_hard_wrapped(text)).ids

    def _segmented_ids(self, text: str) -> tuple[list[int], list[str]]:
        """(ids, the pieces read as unknown) of `text` cut by the segmenter."""
        ids, unknown, get = [], [], self._ids.get
        for piece in _segmented(self._tokenizer, self.segmenter, text):
            token_id = get(piece, UNK_ID)
            ids.append(token_id)
            if token_id == UNK_ID:
                unknown.append(piece)
        return ids, unknown

    def encode_long(self, text: str, piece_chars: int = 1 << 20) -> tuple[list[int], int]:
        """(encode(text), unknown_chars(text)) of a long text, in parallel pieces.

        The text is unwrapped whole (the decision is the text's), then cut just before a
        non-space character that follows a space: no word, and no run of line ends (one <p>),
        spans a cut, so the pieces' ids end to end are the whole text's.
        """
        if self.segmenter is not None:  # the segmenter, not HF, is the slow part here
            ids, unknown_pieces = self._segmented_ids(text)
            return ids, sum(map(len, unknown_pieces))
        text = unwrap_hard_wrapped(text)
        pieces, begin = [], 0
        while begin < len(text):
            end = _cut_after_space(text, begin + piece_chars)
            pieces.append(text[begin:end])
            begin = end
        ids, unknown = [], 0
        for encoding in self._tokenizer.encode_batch(pieces):
            ids += encoding.ids
            pairs = zip(encoding.ids, encoding.offsets, strict=True)
            unknown += sum(b - a for token_id, (a, b) in pairs if token_id == UNK_ID)
        return ids, unknown

    def decode(self, ids: Sequence[int]) -> str:
        decoder = self.stream_decoder()
        return "".join(map(decoder.push, ids)) + decoder.flush()

    def unknown_chars(self, text: str) -> int:
        if self.segmenter is not None:
            return sum(map(len, self._segmented_ids(text)[1]))
        return sum(b - a for a, b in self._unknown_spans(text))

    def unknown(self, text: str) -> list[str]:
        if self.segmenter is not None:
            return list(dict.fromkeys(self._segmented_ids(text)[1]))
        return list(dict.fromkeys(text[a:b] for a, b in self._unknown_spans(text)))

    def _unknown_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) in `text` of each piece read as unknown (unwrapping keeps offsets)."""
        encoding = self._tokenizer.encode(unwrap_hard_wrapped(text))
        pairs = zip(encoding.ids, encoding.offsets, strict=True)
        return [span for token_id, span in pairs if token_id == UNK_ID]

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._tokens):
            raise BookgenError(
                f"token id {token_id} is outside the vocabulary (0-{len(self._tokens) - 1})"
            )
        return self._tokens[token_id]

    def to_json(self) -> str:
        """HuggingFace's own JSON, which `tokenizers.Tokenizer.from_file` opens.

        A segmented tokenizer's segmenter is a field of the model that HuggingFace ignores
        (its WordLevel reader skips unknown keys; a new top-level key it refuses). Until issue
        24 was done bookgen wrapped it instead, {"segmenter": ..., "tokenizer": {...}}, which
        HuggingFace cannot open; `from_json` still reads that.
        """
        text = self._tokenizer.to_str()
        if self.segmenter is None:
            return text  # as every checkpoint before segmenters holds it
        data = json.loads(text)
        model = data["model"]
        data["model"] = {"type": model.pop("type"), SEGMENTER_FIELD: self.segmenter, **model}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    def stream_decoder(self) -> WordStreamDecoder | JoinedStreamDecoder:
        if self.segmenter is not None:
            return JoinedStreamDecoder(self._tokens)
        return WordStreamDecoder(self._tokens)


_WRAPPED_LINE_END = re.compile(r"(?<=[^\n])\n(?=[^\n])")


def unwrap_hard_wrapped(text: str) -> str:
    """Join the lines of prose that was hard-wrapped at a fixed width (as Gutenberg books are).

    Those line ends are the typesetter's, not the author's: a word model that learned them would
    scatter line breaks through its prose. Text is taken as hard-wrapped when most lines inside
    paragraphs end near one width of 60+ columns; verse and plays (short, ragged lines) keep
    their line breaks. Paragraph breaks always stay. Each joined line end becomes one space, so
    the text keeps its length (bits per character stay comparable).
    """
    lines = text.split("\n")
    inner = sorted(len(a) for a, b in pairwise(lines) if a.strip() and b.strip())
    if len(inner) < 20:
        return text
    width = inner[int(len(inner) * 0.95)]
    near = sum(1 for n in inner if n >= width - 20) / len(inner)
    if width < 60 or near < 0.85:
        return text
    return _WRAPPED_LINE_END.sub(" ", text)


_SPACE_THEN_TEXT = re.compile(r"(?<=\s)\S")


def _cut_after_space(text: str, position: int) -> int:
    """The first position at or after `position` where a non-space follows a space, or the end."""
    found = _SPACE_THEN_TEXT.search(text, position)
    return found.start() if found else len(text)


def _pieces(tokenizer: HFTokenizer, text: str) -> list[str]:
    normalized = tokenizer.normalizer.normalize_str(text)
    return [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


def _segmented(tokenizer: HFTokenizer, segmenter: str, text: str) -> tuple[str, ...]:
    """Segmented text is not unwrapped: a line end there is no space between words."""
    return _segment_once(text, segmenter, _lowercases(tokenizer))


@functools.lru_cache(maxsize=1)
def _segment_once(text: str, segmenter: str, lowercase: bool) -> tuple[str, ...]:
    """The last text's words, kept: the token cache segments a book's training part twice,
    to count its words and then to encode it, and the segmenter is the slow part (jieba:
    about 100 K characters a second)."""
    if lowercase:
        text = text.lower()
    return tuple(segment(text, segmenter, PARAGRAPH, NEWLINE))


class JoinedStreamDecoder:
    """Writes segmented words back as they were: no spaces between them (the spaces the text
    had are tokens of their own), a line end for <nl> and a blank line for <p>."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tokens

    def push(self, token_id: int) -> str:
        tokens = self._tokens
        token = tokens[token_id] if 0 <= token_id < len(tokens) else UNK_TOKEN
        return {PARAGRAPH: "\n\n", NEWLINE: "\n"}.get(token, token)

    def flush(self) -> str:
        return ""

    def __deepcopy__(self, memo: dict) -> JoinedStreamDecoder:
        return self  # it has no state of its own


# How each token attaches to its neighbours when words are written back as prose.
_NO_SPACE_BEFORE = re.compile(r"[.,;:!?)\]}%…’”»]|(?i:['’]?n['’]t|['’](?:s|m|d|re|ve|ll))")
_NO_SPACE_AFTER = re.compile(r"[(\[{“‘„«$£€#¿¡]")
_NO_SPACE_AROUND = re.compile(r"-|[—–―]+|/")  # she—quite, she--quite, twenty-<nl>five, and/or
_PAIRED = {'"', "_"}  # the same mark opens and closes ("quoted", _italic_)


class WordStreamDecoder:
    """Writes word tokens back as prose, as they come.

    The space before a token depends only on the tokens before it: none at the start of a line,
    none after an opening mark ( “ ‘ $ and none before a closing one . , ! ? ) ” and "n't", "'s".
    A straight " or _ opens at the start of a line or when none is open in this paragraph, and
    closes otherwise. A straight ' does the same, except that when none is open it ends a word
    ending in s (the girls' room) rather than opening a quote. No decision depends on a later
    token, so each token's text is returned at once and `flush` has nothing left to give.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tokens
        self._previous = ""  # the last token written on this line ("" at the start of a line)
        self._glue_next = True  # no space before the next token
        self._open: set[str] = set()  # straight quote marks opened in this paragraph

    def __deepcopy__(self, memo: dict) -> WordStreamDecoder:
        # Snapshots (chat's /undo) copy the decoder's position, never the whole vocabulary.
        twin = copy.copy(self)
        twin._open = set(self._open)
        return twin

    def push(self, token_id: int) -> str:
        tokens = self._tokens
        token = tokens[token_id] if 0 <= token_id < len(tokens) else UNK_TOKEN
        if token in (PARAGRAPH, NEWLINE):
            self._previous, self._glue_next = "", True
            if token == NEWLINE:
                return "\n"
            self._open.clear()
            return "\n\n"
        glue_before, glue_after = self._attachment(token)
        space = "" if self._glue_next or glue_before else " "
        self._previous, self._glue_next = token, glue_after
        return space + token

    def flush(self) -> str:
        return ""

    def _attachment(self, token: str) -> tuple[bool, bool]:
        """(no space before, no space after) for `token` here."""
        if token in _PAIRED or token == "'":
            return self._quote(token)
        if token == "’" and self._glue_next:
            return False, True  # an elision at the start of a line or quote: ’Tis
        mark = token[0] if len(set(token)) == 1 else token  # a run (... !!) acts as its mark
        if _NO_SPACE_AROUND.fullmatch(mark):
            return True, True
        return bool(_NO_SPACE_BEFORE.fullmatch(mark)), bool(_NO_SPACE_AFTER.fullmatch(mark))

    def _quote(self, mark: str) -> tuple[bool, bool]:
        previous = self._previous
        # A closing mark is glued to the word before it, so one that starts a line opens.
        if mark in self._open and previous:
            self._open.discard(mark)
            return True, False
        if mark == "'" and previous[:1].isalnum() and previous[-1] in "sS":
            return True, False  # an apostrophe after a plural, not a quote: the girls' room
        self._open.add(mark)
        return False, True


def tokenizer_from_json(text: str, level: str) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint saved (`level` comes from the checkpoint's manifest)."""
    if level == "char":
        data = json.loads(text)
        return CharTokenizer(data["chars"])
    if level == "word":
        return WordTokenizer.from_json(text)
    raise BookgenError(f"unknown tokenizer level {level!r} in checkpoint")
