"""Words for languages written without spaces: Chinese (jieba) and Japanese (SudachiPy).

The word tokenizer's space-and-punctuation splitter makes a whole clause of Chinese one "word",
so a text that is mostly Han characters (or Han and kana) is cut by a segmenter made for the
language instead. Only the runs between spaces are segmented; runs of spaces stay tokens of their
own, so decoding can join the words without spaces and still give back the spaces the text had
(the ideographic spaces that start a Chinese paragraph, a Latin phrase inside Japanese):

    "　　宝玉道：好妹妹\n\n"  ->  "　　" "宝玉" "道" "：" "好" "妹妹" <p>

Both segmenters are optional extras, imported on first use only: English books and
`bookgen --help` never pay for them.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from functools import cache

from bookgen.errors import BookgenError

JIEBA = "jieba"
SUDACHI = "sudachi"
SEGMENTERS = (JIEBA, SUDACHI)

# Unified ideographs, extension A, compatibility ideographs, extensions B-G.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# Hiragana, katakana (with its phonetic extensions and the half-width forms).
_KANA = re.compile(r"[\u3041-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
SAMPLE_CHARS = 1 << 20  # the share of scripts is stable long before a whole book
# Chinese when most letters are Han: then most of the text has no spaces between words, and the
# space splitter's "words" are clauses. Real Chinese prose is far above (红楼梦: Han is 100% of
# its letters); an English book that quotes some Chinese, or Korean (Hangul, with spaces), far
# below. Japanese also writes Han, so kana decides: Japanese prose is about 2/3 kana (こころ:
# 70% of letters), Chinese has none, so a few percent of kana is already Japanese.
MOSTLY = 0.5
KANA_SHARE = 0.05


def choose_segmenter(text: str) -> str | None:
    """The segmenter `text` needs: JIEBA for Chinese, SUDACHI for Japanese, None for the rest."""
    sample = text[:SAMPLE_CHARS]
    letters = sum(map(str.isalpha, sample))
    if not letters:
        return None
    han = len(_HAN.findall(sample)) / letters
    kana = len(_KANA.findall(sample)) / letters
    if kana >= KANA_SHARE and han + kana >= MOSTLY:
        return SUDACHI
    if han >= MOSTLY:
        return JIEBA
    return None


# A run of line ends with only spaces between (a paragraph break), one line end (trailing spaces
# dropped, as the space splitter drops them), a run of other spaces, or a run of anything else.
_RUNS = re.compile(r"[^\S\n]*\n(?:[^\S\n]*\n)+|[^\S\n]*\n|[^\S\n]+|\S+")


def segment(text: str, segmenter: str, paragraph: str, newline: str) -> list[str]:
    """The words of `text`, with `paragraph` and `newline` for line ends and spaces kept."""
    cut = _cutter(segmenter)
    pieces: list[str] = []
    for match in _RUNS.finditer(text):
        run = match.group()
        if not run[-1].isspace():
            pieces += cut(run)
        elif run[-1] != "\n":
            pieces.append(run)
        else:
            pieces.append(paragraph if run.count("\n") > 1 else newline)
    return pieces


def _cutter(segmenter: str) -> Callable[[str], list[str]]:
    if segmenter == JIEBA:
        return _jieba()
    if segmenter == SUDACHI:
        return _sudachi()
    raise BookgenError(f"unknown word segmenter {segmenter!r} (bookgen knows {SEGMENTERS})")


@cache
def _jieba() -> Callable[[str], list[str]]:
    """jieba's cut, with its dictionary cache kept in bookgen's cache folder (not /tmp)."""
    try:
        with warnings.catch_warnings():  # its invalid escapes warn when compiled from source
            warnings.simplefilter("ignore")
            import jieba
    except ImportError:
        raise BookgenError(
            "the word level for Chinese needs jieba: pip install 'bookgen[zh]' "
            "(or train with --level char)"
        ) from None
    from bookgen.cache import cache_dir

    jieba.setLogLevel(logging.WARNING)  # "Building prefix dict..." on stderr at first use
    segmenter = jieba.Tokenizer()
    folder = cache_dir() / "jieba"
    folder.mkdir(parents=True, exist_ok=True)
    segmenter.tmp_dir = str(folder)
    # HMM finds the words its dictionary lacks, the names above all (黛玉, 凤姐, 贾母).
    return lambda run: list(segmenter.cut(run, HMM=True))


SUDACHI_BYTES = 49_149  # SudachiPy refuses longer input ("Input is too long")


@cache
def _sudachi() -> Callable[[str], list[str]]:
    try:
        from sudachipy import Dictionary, SplitMode
    except ImportError:
        raise BookgenError(
            "the word level for Japanese needs SudachiPy: pip install 'bookgen[ja]' "
            "(or train with --level char)"
        ) from None
    try:
        tokenizer = Dictionary(dict="core").tokenizer(mode=SplitMode.C)  # C: the longest units
    except Exception as error:  # no dictionary package: sudachipy raises its own error type
        raise BookgenError(
            f"SudachiPy found no dictionary ({error}): pip install 'bookgen[ja]' "
            "(or train with --level char)"
        ) from None

    def cut(run: str) -> list[str]:
        return [m.surface() for chunk in _chunks(run) for m in tokenizer.tokenize(chunk)]

    return cut


def _chunks(run: str, limit: int = SUDACHI_BYTES) -> list[str]:
    """`run` in pieces under `limit` UTF-8 bytes, cut after a 。 where one is near the end."""
    chunks = []
    while len(run.encode("utf-8")) >= limit:
        end = limit // 4  # characters: at most 4 bytes each
        stop = run.rfind("。", end // 2, end)
        end = stop + 1 if stop >= 0 else end
        chunks.append(run[:end])
        run = run[end:]
    return [*chunks, run] if run else chunks
