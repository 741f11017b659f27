"""`bookgen style`: how close is a text (typically a model's sample) to the book it learned from?

Three questions, each answered with a measure that is simple to state:

1. Does the text copy the book? `longest_copy` is the longest run of characters of the text
   that occurs verbatim in the training book(s); `copied_20gram_share` is the share of the
   text's character 20-grams (the runs of 20 characters starting at each position) that occur
   in the book. Both come from one suffix array (pydivsufsort) over text + separator + books,
   with every run of spaces and line ends read as one space.
2. Does it read like the book? Surface statistics of the text beside the book's: sentence and
   word lengths, punctuation, dialogue, vocabulary richness, function-word rates.
3. Which book is it closest to? Burrows' Delta and Cosine Delta over the most frequent words,
   and the bits per character of the text under a character n-gram model of each book.
   Lower is closer for all three. `closest` is the book with the fewest bits per character:
   the n-gram model reads every character, so it still judges text that is not yet made of
   real words, as an early model writes, where the word measures go astray (measured: samples
   of a 250-step Alice model went to Alice by bits per character, to Moby-Dick by both Deltas).

No model is loaded: only the checkpoint's manifest, to find the books it was trained on.
nltk and pydivsufsort are imported inside the functions that use them, so that the other
commands do not pay for their import.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bookgen.errors import BookgenError

if TYPE_CHECKING:
    from bookgen.corpus import Reading

COPY_GRAM = 20  # characters: the n-grams whose copied share is reported
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes (don't)
PUNCTUATION = {
    ".": r"\.",
    ",": ",",
    ";": ";",
    ":": ":",
    "!": "!",
    "?": r"\?",
    "—": r"—+|-{2,}",  # a dash, printed (—) or typed (--)
}
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
SPACES = re.compile(r"\s+")
# English function words: the candidates for the function-word rows (nltk's stopword list
# would need a download).
FUNCTION_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just may me might more most must my myself no nor not now of off on once only or
    other our ours ourselves out over own same shall she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up upon
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves""".split()
)


@dataclass(frozen=True)
class StyleSettings:
    """The fixed choices behind the measures, written into every report."""

    most_frequent_words: int = 150  # Delta's word list: the most frequent of all books together
    chunk_words: int = 2000  # Delta's z-scores: mean and spread over chunks this long
    ngram_order: int = 5  # characters per n-gram: 4 of context, then the character predicted
    window_words: int = 500  # moving-average type-token ratio over windows this long
    function_words: int = 10  # rows: the training books' most frequent function words
    punkt_sample_chars: int = 100_000  # the sentence splitter learns from this much of the book

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise BookgenError(f"style setting {name} must be a positive integer, not {value}")


@dataclass(frozen=True)
class TextStats:
    """Surface statistics of one text. Rates are per 1000 characters or per 1000 words."""

    characters: int
    words: int
    sentences: int  # with at least one word, as the Punkt splitter cuts them
    mean_sentence_words: float
    mean_word_chars: float
    punctuation_per_1000_chars: dict[str, float]  # mark -> rate
    dialogue_share: float  # share of the characters that stand inside quotation marks
    type_token_ratio: float  # moving average over `window_words` windows
    function_words_per_1000_words: dict[str, float]


@dataclass(frozen=True)
class Distance:
    """How far the text is from one book; lower is closer for all three."""

    delta: float | None  # Burrows' Delta; None when the books are too short to z-score
    cosine_delta: float | None
    ngram_bits_per_char: float
    trained_on: bool  # a training book of the checkpoint, rather than one given with --against


@dataclass(frozen=True)
class StyleReport:
    text_path: str
    longest_copy: int  # characters
    longest_copy_text: str
    copied_20gram_share: float
    closest: str  # the book with the fewest n-gram bits per character
    distances: dict[str, Distance]  # book name (file stem) -> distance
    text_stats: TextStats
    book_stats: dict[str, TextStats]  # the training books
    settings: StyleSettings = field(default_factory=StyleSettings)

    def to_json(self) -> dict:
        """A JSON-ready dict (what `bookgen style --json` prints)."""
        return asdict(self)


@dataclass(frozen=True)
class Book:
    """A text to compare with: its name (file stem) and whether the model was trained on it."""

    name: str
    text: str
    trained_on: bool


# --- reading ---------------------------------------------------------------------------------


def compare_style(
    text_path: str | Path,
    checkpoint: str | Path | None = None,
    against: Sequence[str] = (),
    settings: StyleSettings | None = None,
    encoding: str | None = None,
    keep_markup: bool = False,
) -> StyleReport:
    """Compare the text in `text_path` with the training books of `checkpoint` (default: the
    newest under ./checkpoints) and with the books `against` (files, folders, catalogue names),
    those decoded in `encoding` if given (default: detected), Aozora markup kept if
    `keep_markup`.
    """
    from bookgen.checkpoint import latest_checkpoint, read_manifest
    from bookgen.corpus import Reading, read_document, read_recorded_books

    text = read_document(text_path).text
    folder = Path(checkpoint) if checkpoint is not None else latest_checkpoint()
    purpose = "put it back where it was to compare a text with it"
    training = read_recorded_books(read_manifest(folder)["corpus"], purpose=purpose)
    books = [Book(d.name, d.text, True) for d in training]
    seen = {Path(d.path).resolve() for d in training}
    books += [
        Book(d.name, d.text, False)
        for d in _read_against(against, seen, Reading(encoding, keep_markup))
    ]
    return compare_texts(text, _unique_names(books), settings or StyleSettings(), str(text_path))


def _read_against(against: Sequence[str], seen: set[Path], reading: Reading) -> list:
    """The --against books, read and cleaned; the training books (in `seen`) are left out."""
    from bookgen.catalog import resolve_inputs
    from bookgen.corpus import open_corpus, read_document

    if not against:
        return []
    files = open_corpus(resolve_inputs(list(against)), reading)
    return [read_document(f.path, reading) for f in files if Path(f.path).resolve() not in seen]


def _unique_names(books: list[Book]) -> list[Book]:
    """Two books with the same file stem get -2, -3, ...: the report is keyed by name."""
    counts: dict[str, int] = {}
    renamed = []
    for book in books:
        counts[book.name] = counts.get(book.name, 0) + 1
        name = book.name if counts[book.name] == 1 else f"{book.name}-{counts[book.name]}"
        renamed.append(Book(name, book.text, book.trained_on))
    return renamed


def compare_texts(
    text: str, books: Sequence[Book], settings: StyleSettings, text_path: str = "<text>"
) -> StyleReport:
    """The whole comparison on texts in memory (cleaned as bookgen reads books)."""
    text_words = words_of(text)
    if not text_words:
        raise BookgenError(f"{text_path}: no words in the text to compare")
    training = [book for book in books if book.trained_on]
    if not training:
        raise BookgenError("no training book to compare the text with")
    book_words = {book.name: words_of(book.text) for book in books}
    longest_copy, longest_copy_text, copied_share = copying(text, [b.text for b in training])
    distances = _distances(text, books, text_words, book_words, settings)
    closest = min(distances, key=lambda name: distances[name].ngram_bits_per_char)
    text_stats, book_stats = _all_stats(text, training, book_words, settings)
    return StyleReport(
        text_path=text_path,
        longest_copy=longest_copy,
        longest_copy_text=longest_copy_text,
        copied_20gram_share=copied_share,
        closest=closest,
        distances=distances,
        text_stats=text_stats,
        book_stats=book_stats,
        settings=settings,
    )


def _distances(
    text: str,
    books: Sequence[Book],
    text_words: list[str],
    book_words: dict[str, list[str]],
    settings: StyleSettings,
) -> dict[str, Distance]:
    deltas = burrows_delta(text_words, book_words, settings)
    alphabet = Alphabet.of([text, *(book.text for book in books)])
    distances = {}
    for book in books:
        model = NgramModel.fit(alphabet.ids(book.text), alphabet.size, settings.ngram_order)
        delta, cosine_delta = deltas[book.name]
        distances[book.name] = Distance(
            delta, cosine_delta, model.bits_per_char(alphabet.ids(text)), book.trained_on
        )
    return distances


# --- copying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alphabet:
    """Characters as small integers, shared by the text and every book.

    Ids start at 2: 0 and 1 are left for separators (the suffix array) and for the start of a
    text (the n-gram model), so they never match a character.
    """

    characters: str

    @classmethod
    def of(cls, texts: Sequence[str]) -> Alphabet:
        return cls("".join(sorted(set().union(*map(set, texts)))))

    @property
    def size(self) -> int:
        return len(self.characters)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        """Code point -> id, shape (largest code point + 1,)."""
        table = np.zeros(max(map(ord, self.characters)) + 1, dtype=np.int32)
        table[[ord(c) for c in self.characters]] = np.arange(2, self.size + 2)
        return table

    def ids(self, text: str) -> np.ndarray:
        """(len(text),) int32 ids of a text whose characters are all in the alphabet."""
        return self._table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


def copying(text: str, books: Sequence[str]) -> tuple[int, str, float]:
    """(longest copy, the text copied, share of 20-grams copied) of `text` from `books`.

    Every run of spaces and line ends counts as one space, in the text and in the books: a
    sentence wrapped at other places is still the same copy, and a stretch of blank lines is
    not one.
    """
    text, books = SPACES.sub(" ", text), [SPACES.sub(" ", book) for book in books]
    alphabet = Alphabet.of([text, *books])
    lengths = copy_lengths(alphabet.ids(text), [alphabet.ids(book) for book in books])
    start = int(np.argmax(lengths))
    grams = lengths[: max(len(text) - COPY_GRAM + 1, 0)]  # where a 20-gram starts
    share = float(np.mean(grams >= COPY_GRAM)) if len(grams) else 0.0
    return int(lengths[start]), text[start : start + int(lengths[start])], share


def copy_lengths(text: np.ndarray, books: Sequence[np.ndarray]) -> np.ndarray:
    """For each position i of `text` (ids >= 2), the length of the longest prefix of text[i:]
    found verbatim in one of `books` ("matching statistics"); shape (len(text),).

    One suffix array over  text 0 book 1 book 1 ...  : a separator occurs nowhere else, so a
    common prefix of a text suffix and a book suffix stops at the end of each. In suffix-array
    order the book suffix sharing the longest prefix with a text suffix is the nearest book
    suffix above or below it, and that prefix is the smallest LCP between them:

        rank   suffix                          LCP with the next
        r-2    book  "the whale, the whale..."      8
        r-1    text  "the whaling voyage..."       19   (a text suffix: passed over)
        r      text  "the whaling voyage of..."     3   above: min(8, 19) = 8
        r+1    book  "thee, O sea..."                   below: 3; match: max(8, 3) = 8
    """
    from pydivsufsort import divsufsort, kasai

    pieces = [text, np.zeros(1, np.int32)]
    for book in books:
        pieces += [book, np.ones(1, np.int32)]
    joined = np.concatenate(pieces)  # int32: pydivsufsort narrows it to bytes when it can
    order = divsufsort(joined)
    lcp = kasai(joined, order)[:-1]  # lcp[k]: common prefix of the suffixes ranked k and k+1
    in_book = order > len(text)
    above = np.zeros(len(order), np.int64)
    above[1:] = _min_since_start(lcp, in_book[:-1])
    below = np.zeros(len(order), np.int64)
    below[:-1] = _min_since_start(lcp[::-1], in_book[1:][::-1])[::-1]
    lengths = np.zeros(len(text), np.int64)
    in_text = order < len(text)
    lengths[order[in_text]] = np.maximum(above, below)[in_text]
    return lengths


def _min_since_start(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """min(values[s..k]) for each k, s the last index <= k where `starts` is true (0 if none).

    A cumulative minimum that begins again at every start: each run is lifted above all later
    runs, so a running minimum never carries into the next run.
    """
    run = np.cumsum(starts)  # 0 before the first start
    lift = (run[-1] - run).astype(np.int64) * (int(values.max(initial=0)) + 1)
    result = np.minimum.accumulate(values + lift) - lift
    return np.where(run > 0, result, 0)


# --- distance: Burrows' Delta ----------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """Lowercased words: runs of letters, with apostrophes inside (don't, o'er)."""
    return WORD.findall(text.lower().replace("’", "'"))


def count_words(words: Sequence[str]):
    """An nltk FreqDist of `words` (counted by Counter: FreqDist counts in Python, 10x slower)."""
    from nltk import FreqDist

    return FreqDist(Counter(words))


def burrows_delta(
    text_words: list[str], book_words: dict[str, list[str]], settings: StyleSettings
) -> dict[str, tuple[float | None, float | None]]:
    """(Delta, Cosine Delta) of the text to each book over the most frequent words.

    The words: the `most_frequent_words` commonest of all the books together. Each book is cut
    into chunks of `chunk_words` words (a shorter book is one chunk); a word's relative
    frequency is z-scored with its mean and standard deviation over all chunks. The text and
    each whole book get z-scored profiles; Delta = mean |z_text - z_book|, Cosine Delta =
    1 - cos(z_text, z_book). Words that do not vary between chunks are left out; with none left
    (fewer than two chunks in all) both are None.
    """
    totals = count_words(word for words in book_words.values() for word in words)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    vocabulary = [word for word, _ in ranked[: settings.most_frequent_words]]
    chunks = np.concatenate(
        [_frequencies(words, vocabulary, settings.chunk_words) for words in book_words.values()]
    )
    spread = chunks.std(axis=0)
    keep = spread > 0
    if not keep.any():
        return {name: (None, None) for name in book_words}
    mean = chunks.mean(axis=0)[keep]

    def z(words: list[str]) -> np.ndarray:
        return (_frequencies(words, vocabulary)[0, keep] - mean) / spread[keep]

    z_text = z(text_words)
    return {name: _deltas(z_text, z(words)) for name, words in book_words.items()}


def _frequencies(
    words: list[str], vocabulary: list[str], chunk_words: int | None = None
) -> np.ndarray:
    """Relative frequencies of the vocabulary words in each chunk of `words`, shape (chunks,
    len(vocabulary)); one chunk of all the words when `chunk_words` is None or more than all.

    Whole chunks only: a short last piece would vary for its shortness, not its style.
    """
    index = {word: position for position, word in enumerate(vocabulary)}
    ids = np.array([index.get(word, len(vocabulary)) for word in words], dtype=np.int64)
    chunk = chunk_words if chunk_words and len(words) >= chunk_words else max(len(words), 1)
    rows = max(len(ids) // chunk, 1)
    ids = ids[: rows * chunk].reshape(rows, -1)  # (rows, chunk); the last column: other words
    flat = (np.arange(rows)[:, None] * (len(vocabulary) + 1) + ids).ravel()
    counts = np.bincount(flat, minlength=rows * (len(vocabulary) + 1))
    return counts.reshape(rows, -1)[:, :-1] / chunk


def _deltas(z_text: np.ndarray, z_book: np.ndarray) -> tuple[float, float | None]:
    delta = float(np.mean(np.abs(z_text - z_book)))
    norms = np.linalg.norm(z_text) * np.linalg.norm(z_book)
    cosine = 1.0 - float(z_text @ z_book / norms) if norms > 0 else None
    return delta, cosine


# --- distance: a character n-gram model ------------------------------------------------------


@dataclass(frozen=True)
class NgramModel:
    """A character n-gram model with interpolated Witten-Bell smoothing.

    P_k(c | h), h the k-1 characters before c, mixes the book's count with the next shorter
    context, trusting the count more when few different characters were seen after h:

        P_k(c | h) = (C(h c) + T(h) * P_(k-1)(c | h')) / (C(h) + T(h))

    C(h c): times c followed h; C(h): times h was followed by anything; T(h): how many different
    characters followed h; h': h without its first character. An unseen h leaves P_(k-1). Below
    order 1 stands the uniform 1/alphabet, so a character the book never has still gets a
    probability. The text and the book each begin after order-1 start symbols.

    An n-gram of ids (a, b, c) is the integer (a * base + b) * base + c, so counting is a
    numpy sort: `grams[k-1]` holds the sorted distinct k-grams and their counts,
    `contexts[k-1]` their distinct contexts h (a k-gram // base) with C(h) and T(h).
    """

    base: int
    alphabet: int
    grams: list[tuple[np.ndarray, np.ndarray]]
    contexts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def fit(cls, ids: np.ndarray, alphabet: int, order: int) -> NgramModel:
        """Count a book (ids from an `Alphabet` of `alphabet` characters)."""
        base = alphabet + 2
        order = min(order, max(1, int(62 / math.log2(base))))  # k-grams must fit in 63 bits
        longest, longest_counts = np.unique(_gram_codes(ids, base, order)[-1], return_counts=True)
        grams, contexts = [], []
        for k in range(1, order + 1):
            # A k-gram is the last k characters of the order-gram ending at the same place.
            unique, inverse = np.unique(longest % base**k, return_inverse=True)
            counts = np.bincount(inverse.ravel(), weights=longest_counts).astype(np.int64)
            grams.append((unique, counts))
            # Sorted grams have sorted contexts: each context is one run of grams.
            context, first, types = np.unique(unique // base, return_index=True, return_counts=True)
            contexts.append((context, np.add.reduceat(counts, first), types))
        return cls(base, alphabet, grams, contexts)

    def bits_per_char(self, ids: np.ndarray) -> float:
        """Mean -log2 P(character | the characters before it) over the text `ids`."""
        probability = np.full(len(ids), 1.0 / self.alphabet)
        codes = _gram_codes(ids, self.base, len(self.grams))
        for (unique, counts), (context, total, types), code in zip(
            self.grams, self.contexts, codes, strict=True
        ):
            seen_total = _lookup(context, total, code // self.base)
            seen_types = _lookup(context, types, code // self.base)
            count = _lookup(unique, counts, code)
            mixed = (count + seen_types * probability) / np.maximum(seen_total + seen_types, 1)
            probability = np.where(seen_total > 0, mixed, probability)
        return float(-np.mean(np.log2(probability)))


def _gram_codes(ids: np.ndarray, base: int, order: int) -> list[np.ndarray]:
    """For k = 1..order, the k-gram ending at each position of `ids`, shape (len(ids),) each;
    the text is preceded by order-1 start symbols (id 0)."""
    padded = np.concatenate([np.zeros(order - 1, np.int64), ids.astype(np.int64)])
    code = np.zeros(len(ids), np.int64)
    result = []
    for k in range(1, order + 1):
        code = code + padded[order - k : len(padded) - k + 1] * base ** (k - 1)
        result.append(code)
    return result


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == query] for each query, 0 where the sorted `keys` lack it."""
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[at] == queries, values[at], 0)


# --- surface statistics ----------------------------------------------------------------------


def _all_stats(
    text: str,
    training: Sequence[Book],
    book_words: dict[str, list[str]],
    settings: StyleSettings,
) -> tuple[TextStats, dict[str, TextStats]]:
    """Statistics of the text and of each training book, on the same function words: the
    training books' most frequent.

    Each book is split into sentences by a Punkt splitter trained on that book; the text by
    the training book's (one trained on them all, if several): a short sample would teach
    Punkt too little.
    """
    counts = count_words(word for book in training for word in book_words[book.name])
    chosen = sorted((w for w in counts if w in FUNCTION_WORDS), key=lambda w: (-counts[w], w))
    chosen = chosen[: settings.function_words]
    splitters = {book.name: sentence_splitter(book.text, settings) for book in training}
    if len(training) == 1:
        (text_splitter,) = splitters.values()
    else:
        text_splitter = sentence_splitter("\n\n".join(b.text for b in training), settings)
    book_stats = {
        book.name: text_statistics(book.text, splitters[book.name], chosen, settings)
        for book in training
    }
    return text_statistics(text, text_splitter, chosen, settings), book_stats


def sentence_splitter(book: str, settings: StyleSettings):
    """nltk's Punkt sentence splitter trained on the book itself (no downloaded model).

    Punkt learns the book's abbreviations ("Mr.", "St.") unsupervised; it learns from up to
    `punkt_sample_chars` characters, ten stretches spread over the book, which is plenty for
    that and keeps a long book to a fraction of a second.
    """
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

    trainer = PunktTrainer()
    trainer.train(_spread_sample(book, settings.punkt_sample_chars), finalize=True)
    return PunktSentenceTokenizer(trainer.get_params())


def _spread_sample(text: str, size: int, pieces: int = 10) -> str:
    """About `size` characters of `text` as `pieces` stretches spread evenly over it, each
    from a paragraph start."""
    if len(text) <= size:
        return text
    stretches = []
    for start in np.linspace(0, len(text) - size // pieces, pieces).astype(int):
        found = text.rfind("\n\n", 0, start)
        begin = found + 2 if found >= 0 else 0
        stretches.append(text[begin : begin + size // pieces])
    return "\n\n".join(stretches)


def text_statistics(
    text: str, splitter, function_words: Sequence[str], settings: StyleSettings
) -> TextStats:
    """The surface statistics of `text`, its sentences cut by `splitter` (Punkt)."""
    words = words_of(text)
    sentences = sum(1 for sentence in splitter.tokenize(text) if WORD.search(sentence))
    counts = count_words(words)
    per_word = 1000 / max(len(words), 1)
    return TextStats(
        characters=len(text),
        words=len(words),
        sentences=sentences,
        mean_sentence_words=len(words) / max(sentences, 1),
        mean_word_chars=sum(map(len, words)) / max(len(words), 1),
        punctuation_per_1000_chars={
            mark: len(re.findall(pattern, text)) * 1000 / len(text)
            for mark, pattern in PUNCTUATION.items()
        },
        dialogue_share=quoted_characters(text) / len(text),
        type_token_ratio=moving_type_token_ratio(words, settings.window_words),
        function_words_per_1000_words={word: counts[word] * per_word for word in function_words},
    )


def moving_type_token_ratio(words: Sequence[str], window: int) -> float:
    """Distinct words / `window`, averaged over every window of consecutive words (MATTR), so
    that long and short texts compare; a text shorter than one window gets its plain ratio.

    Counted without sliding: the word at j is new in the windows that start after its previous
    occurrence p[j] and still hold j, i.e. the starts s with max(p[j] + 1, j - window + 1) <= s
    <= min(j, n - window).
    """
    n = len(words)
    if n == 0:
        return 0.0
    if n <= window:
        return len(set(words)) / n
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(word, len(index)) for word in words])
    previous = np.full(n, -1)
    order = np.argsort(ids, kind="stable")  # each word's positions, in text order
    same = ids[order[1:]] == ids[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    positions = np.arange(n)
    first = np.maximum(previous + 1, positions - window + 1)
    last = np.minimum(positions, n - window)
    new_in = np.clip(last - first + 1, 0, None).sum()
    return float(new_in / ((n - window + 1) * window))


def quoted_characters(text: str) -> int:
    """How many characters stand between quotation marks (the marks not counted).

    Double quotes ("...", “...”) and single quotes ('...', ‘...’) pair up within a paragraph.
    A single quote between two letters is an apostrophe (don't); a double quote still open at
    a paragraph's end closes there, as a speech running over several paragraphs is written
    (each paragraph opens a quote, only the last closes it); an unclosed single quote is left
    out ('tis, the boys').
    """
    marks = np.zeros(len(text) + 1, np.int64)
    for paragraph in _paragraphs(text):
        for begin, end in _quoted_spans(text, paragraph):
            marks[begin] += 1
            marks[end] -= 1
    return int(np.count_nonzero(np.cumsum(marks)[:-1]))


def _paragraphs(text: str) -> list[tuple[int, int]]:
    bounds = [0]
    for match in PARAGRAPH_BREAK.finditer(text):
        bounds += [match.start(), match.end()]
    bounds.append(len(text))
    return list(zip(bounds[::2], bounds[1::2], strict=True))


_QUOTE_MARKS = {"double": re.compile(r'["“”]'), "single": re.compile(r"['‘’]")}


def _quoted_spans(text: str, paragraph: tuple[int, int]) -> list[tuple[int, int]]:
    """(begin, end) of the quoted stretches in text[paragraph[0]:paragraph[1]]."""
    start, stop = paragraph
    spans = []
    for kind, pattern in _QUOTE_MARKS.items():
        opened = None
        for match in pattern.finditer(text, start, stop):
            at = match.start()
            before = text[at - 1] if at > start else " "
            after = text[at + 1] if at + 1 < stop else " "
            can_open, can_close = _quote_roles(text[at], before, after)
            if opened is None and can_open:
                opened = at + 1
            elif opened is not None and can_close:
                spans.append((opened, at))
                opened = None
        if opened is not None and kind == "double":
            spans.append((opened, stop))
    return spans


def _quote_roles(mark: str, before: str, after: str) -> tuple[bool, bool]:
    """Whether a quotation mark can open a quote, and whether it can close one."""
    if mark in "“‘":
        return True, False
    if mark == "”":
        return False, True
    if mark == "’":  # closing, unless inside a word (don't)
        return False, not after.isalnum()
    if mark == '"':
        return True, True
    # A straight ' opens before a word, closes after one, and inside a word is an apostrophe.
    return (
        not before.isalnum() and not after.isspace(),
        not after.isalnum() and not before.isspace(),
    )


# --- rendering -------------------------------------------------------------------------------


def style_tables(report: StyleReport) -> list:
    """What `bookgen style` prints: rich tables of copying, statistics and distances."""
    return [_copy_table(report), _stats_table(report), _distance_table(report), _verdict(report)]


def _copy_table(report: StyleReport):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="copying from the training book", show_header=False)
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    shown = report.longest_copy_text.replace("\n", " ")
    excerpt = shown if len(shown) <= 80 else shown[:77] + "..."
    # Text, not markup: a book's "[Exit]" must print as it is.
    table.add_row("longest verbatim copy", Text(f"{report.longest_copy} characters: {excerpt!r}"))
    table.add_row(
        f"{COPY_GRAM}-character runs found in the book", f"{report.copied_20gram_share:.1%}"
    )
    return table


def _stats_table(report: StyleReport):
    from rich.table import Table
    from rich.text import Text

    columns = [("text", report.text_stats), *report.book_stats.items()]
    table = Table(title="style statistics")
    table.add_column("")
    for name, _ in columns:
        table.add_column(Text(name), justify="right")
    for label, value in _stat_rows(report.text_stats, report.settings):
        table.add_row(Text(label), *(value(stats) for _, stats in columns))
    return table


def _stat_rows(stats: TextStats, settings: StyleSettings) -> list:
    """(label, stats -> cell) for each row of the statistics table."""
    rows = [
        ("characters", lambda s: f"{s.characters:,}"),
        ("words", lambda s: f"{s.words:,}"),
        ("sentences", lambda s: f"{s.sentences:,}"),
        ("words per sentence", lambda s: f"{s.mean_sentence_words:.1f}"),
        ("characters per word", lambda s: f"{s.mean_word_chars:.2f}"),
        ("in quotation marks", lambda s: f"{s.dialogue_share:.1%}"),
        (
            f"type-token ratio ({settings.window_words}-word windows)",
            lambda s: f"{s.type_token_ratio:.3f}",
        ),
    ]
    for mark in stats.punctuation_per_1000_chars:
        rows.append((f"{mark}  per 1000 characters", _rate("punctuation_per_1000_chars", mark)))
    for word in stats.function_words_per_1000_words:
        rows.append((f"'{word}' per 1000 words", _rate("function_words_per_1000_words", word)))
    return rows


def _rate(attribute: str, key: str):
    return lambda stats: f"{getattr(stats, attribute)[key]:.1f}"


def _distance_table(report: StyleReport):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="distance to each book (lower = closer)")
    # A book's name is more use whole than the other columns.
    width = max(len(name) for name in report.distances) + 2
    table.add_column("book", no_wrap=True, min_width=width)
    table.add_column("", no_wrap=True)
    for column in ("Delta", "Cosine Delta", "bits/char"):
        table.add_column(column, justify="right")
    for name, distance in report.distances.items():
        table.add_row(
            Text(name + (" *" if name == report.closest else "")),
            "trained on" if distance.trained_on else "",
            _number(distance.delta),
            _number(distance.cosine_delta),
            f"{distance.ngram_bits_per_char:.3f}",
        )
    return table


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _verdict(report: StyleReport):
    from rich.text import Text

    return Text(
        f"* closest: {report.closest} (fewest bits per character under a character "
        f"{report.settings.ngram_order}-gram model of each book; Delta: Burrows' Delta over the "
        f"{report.settings.most_frequent_words} commonest words)"
    )
