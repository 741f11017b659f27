"""benchmarks/encodings.py: how its test files are made and judged (the parts with no timing)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "encodings.py"
spec = importlib.util.spec_from_file_location("bench_encodings", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_encodings"] = bench  # dataclasses look their module up while the file runs
spec.loader.exec_module(bench)

CHINESE = "第一回 甄士隐梦幻识通灵 贾雨村风尘怀闺秀\r\n\u3000\u3000列位看官：你道此书从何而来？\r\n"
CHINESE *= 40


def test_encodable_drops_what_an_encoding_lacks_and_counts_it():
    # 红 and 楼 are simplified forms Big5 lacks; 梦 too. 第 and 回 are in Big5.
    assert bench.encodable("红楼梦第一回", ["big5"]) == ("第一回", 3)
    # Every encoding named must have the character: € is in cp1252, not in Latin-1.
    assert bench.encodable("a€b", ["cp1252"]) == ("a€b", 0)
    assert bench.encodable("a€b€", ["cp1252", "latin-1"]) == ("ab", 2)


def test_a_hangul_syllable_outside_ks_x_1001_counts_as_lacking_in_euc_kr():
    # Python writes 똠 as an 8-byte make-up sequence that cp949 reads as jamo.
    assert "똠".encode("euc_kr") != "똠".encode("cp949")
    assert bench.encodable("가똠각", ["euc_kr", "cp949"]) == ("가각", 1)
    assert bench.encodable("가똠각", ["cp949"]) == ("가똠각", 0)


def test_verdict_compares_the_whole_text_a_leading_bom_aside():
    data = CHINESE.encode("gb18030")
    assert bench.verdict(data, "gb18030", CHINESE) == "right"
    assert bench.verdict(b"\x84\x31\x95\x33" + data, "gb18030", CHINESE) == "right"
    assert bench.verdict("\ufeffabc".encode(), "utf-8", "abc") == "right"
    assert bench.verdict(data, "utf-8", CHINESE) == "not valid utf-8 at byte 0"
    assert bench.verdict(b"abc", None, "abc") == "no answer"
    assert bench.verdict(b"abc", "no-such", "abc") == "no-such: Python has no such codec"
    # Read one byte at a time: 2 bytes a character, so twice as long.
    assert bench.verdict("红楼".encode("gb18030"), "windows-1252", "红楼") == (
        "4 characters for the text's 2"
    )
    # A single-byte text in the wrong table: as long, some characters differ.
    assert bench.verdict("żółw".encode("cp1250"), "windows-1252", "żółw") == (
        "2 of 4 characters differ"
    )


def test_windows_1252_is_judged_as_bookgen_decodes_it():
    # Python's cp1252 refuses 0x81; bookgen's table reads it as Latin-1 does.
    assert bench.verdict(b"a\x81\x93", "windows-1252", "a\x81\u201c") == "right"
    assert bench.verdict(b"a\x81\x93", "cp1252", "a\x81\u201c") == "not valid cp1252 at byte 1"


def test_windows_are_whole_lines_with_something_past_ascii():
    lines = [f"line {n} {'é' if n % 7 == 0 else ''}\n".encode("cp1252") for n in range(3000)]
    data = b"".join(lines)
    pieces = bench.windows(data, 1024, 20, random.Random(1))
    assert len(pieces) == 20
    for piece in pieces:
        start = data.index(piece)
        assert start == 0 or data[start - 1 : start] == b"\n"
        assert piece.endswith(b"\n") and len(piece) <= 1024
        assert not piece.isascii()
    assert pieces == bench.windows(data, 1024, 20, random.Random(1))  # the seed places them


def test_a_file_no_longer_than_a_window_is_one_window():
    data = "first line\nžluťoučký kůň\n".encode("cp1250") * 10
    assert bench.windows(data, 1024, 30, random.Random(0)) == [data[len(b"first line\n") :]]


def test_no_window_of_a_pure_ascii_file():
    assert bench.windows(b"plain line\n" * 5000, 1024, 5, random.Random(0)) == []


def test_the_chinese_files_all_hold_the_same_text():
    notes: list[str] = []
    raw = b"\x84\x31\x95\x33" + CHINESE.encode("gb18030")
    cases = {case.name: case for case in bench.chinese(raw, notes)}
    for name in ("gb18030-bom", "gb18030", "utf-8", "utf-8-sig"):
        assert cases[f"hongloumeng.{name}"].text == CHINESE, name
    assert cases["hongloumeng.gb18030"].data == CHINESE.encode("gb18030")
    # Big5: the simplified forms it lacks dropped, and counted in the note.
    big5, dropped = bench.encodable(CHINESE, ["big5"])
    assert cases["hongloumeng.big5"].text == big5 and dropped > 0
    assert f"less the {dropped:,} of its {len(CHINESE):,} characters" in notes[0]


def test_a_windows_1252_book_is_copied_to_utf_8_and_latin_1(tmp_path):
    text = "It was \u201cthe best\u201d of times \u2014 caf\u00e9 \u0153uvre \u20ac5.\r\n" * 50
    book = tmp_path / "tale.txt"
    book.write_bytes(text.encode("cp1252"))
    cases = {case.name: case for case in bench.western(book)}
    assert sorted(cases) == ["tale.latin-1", "tale.own-cp1252", "tale.utf-8"]
    assert cases["tale.own-cp1252"].text == cases["tale.utf-8"].text == text
    # Latin-1 lacks the quotes, the dash, œ and €: written as a person would type them, or
    # (€) dropped.
    plain = 'It was "the best" of times -- caf\u00e9 oeuvre 5.\r\n' * 50
    assert cases["tale.latin-1"].text == plain


def test_an_ascii_book_is_only_its_own_file(tmp_path):
    book = tmp_path / "plain.txt"
    book.write_bytes(b"Plain words.\n" * 10)
    assert [case.name for case in bench.western(book)] == ["plain.own-utf-8"]


def test_a_detector_pick_is_judged_through_bookgens_map_and_as_named(monkeypatch):
    data = "caf\u00e9 \u201cok\u201d\n".encode("cp1252")
    monkeypatch.setitem(bench.DETECTORS, "says-ascii", ("none", lambda sample: ("ascii", 0.5)))
    row = bench.detector_reads("says-ascii", data, data, data.decode("cp1252"), repeats=1)
    # bookgen reads an "ascii" pick with its Windows-1252 table; Python's ascii codec fails.
    assert row["verdict"] == "right"
    assert row["verdict_as_named"] == "not valid ascii at byte 3"
    assert row["pick"] == "ascii" and row["confidence"] == 0.5


def test_bookgen_says_what_bookgen_corpus_says(tmp_path):
    path = tmp_path / "book.txt"
    data = CHINESE.encode("gb18030")
    path.write_bytes(data)
    row = bench.bookgen_reads(path, data, CHINESE, repeats=1)
    assert row["pick"] == "gb18030" and row["verdict"] == "right"
    assert row["choosing_cpu_s"] == pytest.approx(
        row["pass1_cpu_s"] - row["pass1_forced_cpu_s"], abs=1e-3
    )


def test_without_the_shared_books_it_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "encodings.json"
    missing = tmp_path / "no-corpora"
    argv = ["encodings.py", "--corpora", str(missing), "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    assert capsys.readouterr().out == (
        f"skipped: {missing} not found; this benchmark reads the shared books there\n"
    )
    assert not out.exists()
