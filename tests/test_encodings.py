"""Books in every script: the legacy encoding is detected, not assumed (bookgen.encodings).

Small texts written here, encoded here, so CI without ../shared/corpora still tests detection;
the two shared books (GB18030 红楼梦, Shift_JIS こころ) where they are."""

from __future__ import annotations

import re
import warnings

import pytest
from typer.testing import CliRunner

from bookgen.cli import app
from bookgen.corpus import Reading, read_document
from bookgen.errors import BookgenError, BookgenWarning
from tests.conftest import shared_corpus

runner = CliRunner()

CHINESE = (
    "第一回　甄士隐梦幻识通灵　贾雨村风尘怀闺秀\n"
    "宝玉听了，忙笑道：“好妹妹，你今日可觉得好些了么？我昨儿夜里想了一夜，总不放心。”\n"
    "黛玉笑道：“好多了。你只管去罢，老太太那里还等着你吃饭呢。”\n"
    "一时丫鬟们进来回说，外头下雪了，园子里的梅花都开了，请姑娘们去看。\n"
    "众人听了都欢喜，便一齐出来，到了园中，只见四面粉妆银砌，十分好看。\n"
)
JAPANESE = (
    "私はその人を常に先生と呼んでいた。だからここでもただ先生と書くだけで本名は打ち明けない。\n"
    "これは世間を憚かる遠慮というよりも、その方が私にとって自然だからである。\n"
    "私が先生と知り合いになったのは鎌倉である。その時私はまだ若々しい書生であった。\n"
    "暑中休暇を利用して海水浴に行った友達からぜひ来いという端書を受け取ったので、\n"
)
RUSSIAN = (
    "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему.\n"
    "Всё смешалось в доме Облонских. Жена узнала, что муж был в связи с бывшею в их доме "
    "француженкою-гувернанткой, и объявила мужу, что не может жить с ним в одном доме.\n"
    "Положение это продолжалось уже третий день и мучительно чувствовалось и самими супругами.\n"
)
KOREAN = (
    "나는 그 사람을 항상 선생님이라고 불렀다. 그래서 여기서도 그냥 선생님이라고만 쓰고 "
    "본명은 밝히지 않겠다.\n이것은 세상을 꺼리는 조심성이라기보다 그 편이 나에게 자연스럽기 "
    "때문이다.\n내가 선생님과 알게 된 것은 가마쿠라에서였다. 그때 나는 아직 젊은 학생이었다.\n"
)
POLISH = (
    "Litwo! Ojczyzno moja! ty jesteś jak zdrowie. Ile cię trzeba cenić, ten tylko się dowie, "
    "kto cię stracił. Dziś piękność twą w całej ozdobie widzę i opisuję, bo tęsknię po tobie.\n"
    "Panno Święta, co jasnej bronisz Częstochowy i w Ostrej świecisz Bramie! Ty, co gród "
    "zamkowy nowogródzki ochraniasz z jego wiernym ludem!\n"
)
CZECH = (
    "Příliš žluťoučký kůň úpěl ďábelské ódy. Když se ráno probudil, bylo mu zle a šel k lékaři, "
    "který mu řekl, že má horečku.\n"
)
GREEK = (
    "Η Ελλάδα είναι χώρα της νοτιοανατολικής Ευρώπης, στο νοτιότερο άκρο της Βαλκανικής "
    "χερσονήσου. Η πρωτεύουσα είναι η Αθήνα.\n"
)
TRADITIONAL = (
    "寶玉聽了，忙笑道：「好妹妹，你今日可覺得好些了麼？我昨兒夜裡想了一夜，總不放心。」\n"
    "黛玉笑道：「好多了。你只管去罷，老太太那裡還等著你吃飯呢。」\n"
    "一時丫鬟們進來回說，外頭下雪了，園子裡的梅花都開了，請姑娘們去看。\n"
)

# (text, the encoding it is saved in, what bookgen should report): supersets where chardet
# names the subset (GB2312 -> gb18030, Big5 -> cp950, Shift_JIS -> cp932, EUC-KR -> cp949).
CASES = {
    "gb18030": (CHINESE, "gb18030", "gb18030"),
    "big5": (TRADITIONAL, "big5", "cp950"),
    "shift_jis": (JAPANESE, "shift_jis", "cp932"),
    "euc_jp": (JAPANESE, "euc_jp", "euc_jp"),
    "euc_kr": (KOREAN, "euc_kr", "cp949"),
    "cp1251": (RUSSIAN, "cp1251", "cp1251"),
    "koi8_r": (RUSSIAN, "koi8_r", "koi8-r"),
    "cp1250": (POLISH, "cp1250", "cp1250"),
    # Not supersets, though chardet's prefer_superset treats them so: read as themselves.
    "iso8859_2": (POLISH, "iso8859_2", "iso8859-2"),
    "iso8859_5": (RUSSIAN, "iso8859_5", "iso8859-5"),
    "czech cp1250": (CZECH, "cp1250", "cp1250"),  # ť: a byte Windows-1252 leaves undefined
    "cp1253": (GREEK, "cp1253", "cp1253"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_legacy_encoding_is_detected_and_reads_back_identical(case, tmp_path):
    text, saved_in, reported = CASES[case]
    path = tmp_path / "book.txt"
    path.write_bytes((text * 8).encode(saved_in))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BookgenWarning)  # no mojibake warning on a right read
        document = read_document(path)
    assert document.text == text * 8
    assert document.encoding == reported
    assert 0 < document.confidence <= 1


def test_the_gb18030_byte_order_mark_is_recognised(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(b"\x84\x31\x95\x33" + CHINESE.encode("gb18030"))
    document = read_document(path)
    assert (document.text, document.encoding, document.confidence) == (CHINESE, "gb18030", None)


def test_western_text_never_asks_the_detector(tmp_path, monkeypatch):
    import bookgen.encodings

    def refuse(*args, **kwargs):
        raise AssertionError("the detector was asked about a Western book")

    monkeypatch.setattr(bookgen.encodings, "detected", refuse)
    path = tmp_path / "book.txt"
    path.write_bytes("Caf\u00e9 cr\u00e8me, na\u00efve \u201cquoted\u201d text.\n".encode("cp1252"))
    document = read_document(path)
    assert (document.encoding, document.confidence) == ("windows-1252", None)


def test_shared_hongloumeng_in_gb18030_reads_as_chinese():
    document = read_document(shared_corpus("cjk/hongloumeng-gb18030.txt"))
    assert document.encoding == "gb18030"  # by its 4-byte byte-order mark
    assert "宝玉" in document.text and "黛玉" in document.text
    assert 4000 < document.distinct_chars < 5000  # 168 when it was read as Windows-1252


def test_shared_kokoro_in_shift_jis_reads_as_japanese():
    document = read_document(shared_corpus("cjk/kokoro-sjis.txt"))
    assert document.encoding == "cp932"
    assert document.confidence > 0.9
    assert "私はその人を常に先生と呼んでいた" in document.text


# --- --encoding: forcing one ------------------------------------------------------------------


def test_a_forced_encoding_is_used_and_named_as_python_names_it(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(RUSSIAN.encode("koi8_r"))
    document = read_document(path, Reading("KOI8-R"))
    assert (document.text, document.encoding, document.confidence) == (RUSSIAN, "koi8-r", None)
    # A CJK subset is read by its superset, which decodes the subset's bytes alike.
    assert Reading("gb2312").encoding == "gb18030"
    assert Reading("cp1252").encoding == "windows-1252"  # bookgen's table, as detected


def test_an_unknown_encoding_is_a_clear_error():
    with pytest.raises(BookgenError, match="unknown encoding 'klingon'"):
        Reading("klingon")


def test_a_file_not_valid_in_the_forced_encoding_is_refused(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(CHINESE.encode("gb18030"))
    with pytest.raises(BookgenError, match="is not valid utf-8 .*leave out --encoding"):
        read_document(path, Reading("utf-8"))


def test_the_cli_forces_an_encoding_and_refuses_an_unknown_one_in_one_line(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes((RUSSIAN * 4).encode("cp1251"))
    shown = runner.invoke(app, ["corpus", str(path), "--encoding", "cp1251"])
    assert shown.exit_code == 0, shown.output
    assert "cp1251" in shown.output
    for command in ("corpus", "train", "explain", "eval"):
        refused = runner.invoke(app, [command, str(path), "--encoding", "klingon"])
        assert refused.exit_code == 2, (command, refused.output)
        assert "unknown encoding 'klingon'" in refused.output
        assert len(refused.output.strip().splitlines()) == 1


def test_the_cli_shows_how_sure_the_detector_was_and_warns_when_unsure(tmp_path):
    sure, unsure = tmp_path / "sure.txt", tmp_path / "unsure.txt"
    sure.write_bytes((CHINESE * 40).encode("gb18030"))
    unsure.write_bytes(POLISH.encode("cp1250"))
    shown = runner.invoke(app, ["corpus", str(sure), str(unsure)])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"│ gb18030 \([01]\.\d\d\) +│", shown.output)  # and how sure the detector was
    confidence = read_document(unsure).confidence
    if confidence < 0.5:  # chardet's confidence on short Polish; the warning follows it
        assert "warning: unsure: the detector is unsure it is cp1250" in shown.output


# --- the mojibake guard -----------------------------------------------------------------------


def test_gb18030_forced_through_windows_1252_warns_with_the_right_encoding(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes((CHINESE * 8).encode("gb18030"))
    with pytest.warns(BookgenWarning, match="mojibake.*try --encoding gb18030"):
        document = read_document(path, Reading("windows-1252"))
    assert document.encoding == "windows-1252"


def test_cyrillic_forced_through_latin_1_warns(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes((RUSSIAN * 8).encode("cp1251"))
    with pytest.warns(BookgenWarning, match="try --encoding cp1251"):
        read_document(path, Reading("latin-1"))


def test_western_text_forced_through_latin_1_reads_without_a_warning(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes("Caf\u00e9 cr\u00e8me, \u00e0 la fran\u00e7aise.\n".encode("latin-1"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BookgenWarning)
        document = read_document(path, Reading("latin-1"))
    assert document.text == "Caf\u00e9 cr\u00e8me, \u00e0 la fran\u00e7aise.\n"


def test_the_books_of_a_checkpoint_are_read_again_as_they_were_forced(tmp_path):
    import hashlib

    from bookgen.corpus import read_recorded_books

    path = tmp_path / "book.txt"
    path.write_bytes(RUSSIAN.encode("koi8_r"))
    digest = hashlib.sha256(RUSSIAN.encode("utf-8")).hexdigest()
    record = {
        "documents": [{"name": "book", "sha256": digest}],
        "paths": [str(path)],
        "reading": Reading("koi8_r").record(),
    }
    assert read_recorded_books(record, "purpose")[0].text == RUSSIAN


def test_the_token_cache_keeps_a_forced_reading_apart(tmp_path, monkeypatch):
    from bookgen.corpus import open_corpus
    from bookgen.tokencache import tokenize_corpus

    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "book.txt"
    path.write_bytes((RUSSIAN * 4).encode("cp1251"))
    detected = tokenize_corpus(open_corpus([path]), {"level": "char"})
    with pytest.warns(BookgenWarning, match="mojibake"):
        forced = tokenize_corpus(open_corpus([path], Reading("latin-1")), {"level": "char"})
    assert not forced.cached  # not the detected reading's entry
    assert detected.tokenizer.decode(detected.train.tokens[:10].tolist()) == RUSSIAN[:10]
    mojibake = RUSSIAN[:10].encode("cp1251").decode("latin-1")
    assert forced.tokenizer.decode(forced.train.tokens[:10].tolist()) == mojibake


def test_without_chardet_a_legacy_book_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "chardet", None)  # import chardet now raises ImportError
    path = tmp_path / "book.txt"
    path.write_bytes((CHINESE * 8).encode("gb18030"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = read_document(path)
    said = [str(warning.message) for warning in caught]
    assert any("pip install 'chardet>=7.7', or pass --encoding" in line for line in said)
    assert any("mojibake); try --encoding NAME" in line for line in said)
    assert document.encoding == "windows-1252"  # today's reading, never silent
