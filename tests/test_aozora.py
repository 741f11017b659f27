"""Aozora Bunko's markup stripped, and nothing else (bookgen.aozora, through the reader)."""

from __future__ import annotations

import pytest

from bookgen.corpus import Reading, read_document
from tests.conftest import shared_corpus

# The plain text: what the marked-up copy below must clean to.
PLAIN = (
    "こころ\n"
    "夏目漱石\n"
    "\n"
    "上　先生と私\n"
    "\n"
    "一\n"
    "\n"
    "　私はその人を常に先生と呼んでいた。だからここでも見当をつけてただ先生と書くだけで本名は"
    "打ち明けない。\n"
    "　先生一人麦藁帽を被って、葉を挘ぎ取っていた。文字は｜と《》で書く。\n"
    "　私は二、三度振った。\n"
)

MARKED = (
    "こころ\n"
    "夏目漱石\n"
    "\n"
    "-------------------------------------------------------\n"
    "【テキスト中に現れる記号について】\n"
    "\n"
    "《》：ルビ\n"
    "（例）私《わたくし》は\n"
    "\n"
    "｜：ルビの付く文字列の始まりを特定する記号\n"
    "（例）先生一人｜麦藁帽《むぎわらぼう》を\n"
    "\n"
    "［＃］：入力者注　主に外字の説明や、傍点の位置の指定\n"
    "　　　（数字は、JIS X 0213の面区点番号、または底本のページと行数）\n"
    "（例）※［＃「てへん＋劣」、第3水準1-84-77］\n"
    "-------------------------------------------------------\n"
    "\n"
    "［＃８字下げ］上　先生と私［＃「上　先生と私」は大見出し］\n"
    "\n"
    "［＃１０字下げ］一［＃「一」は中見出し］\n"
    "\n"
    "　私《わたくし》はその人を常に先生と呼んでいた。だからここでも見当《けんとう》をつけて"
    "ただ先生と書くだけで本名は打ち明けない。\n"
    "　先生一人｜麦藁帽《むぎわらぼう》を被って、葉を※［＃「てへん＋劣」、第3水準1-84-77］"
    "ぎ取っていた。文字は※［＃縦線、1-1-35］と※［＃始め二重山括弧、1-1-52］"
    "※［＃終わり二重山括弧、1-1-53］で書く。\n"
    "　私は二、三度｜振《ふ》った［＃「振った」に傍点］。\n"
    "\n"
    "\n"
    "\n"
    "底本：「こころ」集英社文庫、集英社\n"
    "　　　1991（平成3）年2月25日第1刷発行\n"
    "初出：「朝日新聞」\n"
    "入力：j.utiyama\n"
    "校正：伊藤時也\n"
    "1999年7月31日公開\n"
    "青空文庫作成ファイル：\n"
    "このファイルは、インターネットの図書館、青空文庫（http://www.aozora.gr.jp/）で作られました。\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_the_same_text_with_and_without_markup_cleans_alike(encoding, tmp_path):
    marked, plain = tmp_path / "marked.txt", tmp_path / "plain.txt"
    marked.write_bytes(MARKED.replace("\n", "\r\n").encode(encoding))
    plain.write_bytes(PLAIN.encode("utf-8"))  # 挘 is not in Shift_JIS: hence its gaiji note
    # 《 》 ｜ in the book's own words come back from their gaiji notes, not as markup.
    assert read_document(marked).text == read_document(plain).text == PLAIN
    assert read_document(marked).markup_stripped


def test_keep_markup_keeps_it(tmp_path):
    marked = tmp_path / "marked.txt"
    marked.write_text(MARKED, encoding="utf-8")
    document = read_document(marked, Reading(keep_markup=True))
    assert document.text == MARKED
    assert not document.markup_stripped


def test_a_book_not_from_aozora_keeps_its_brackets(tmp_path):
    text = "彼は《夜明け》という本を読んだ。｜これは線だ。［＃注記］\n底本：ある本\n"
    path = tmp_path / "book.txt"
    path.write_text(text, encoding="utf-8")
    document = read_document(path)
    assert document.text == text
    assert not document.markup_stripped


def test_a_file_recognised_by_its_colophon_alone(tmp_path):
    path = tmp_path / "book.txt"
    start = MARKED.index("［＃８字下げ］")
    path.write_text("こころ\n夏目漱石\n\n" + MARKED[start:], encoding="utf-8")
    assert read_document(path).text == PLAIN


def test_the_shared_kokoro_loses_its_markup_and_nothing_else():
    document = read_document(shared_corpus("cjk/kokoro-sjis.txt"))
    text = document.text
    for mark in ("｜", "《", "［＃", "底本：", "【テキスト中に現れる記号について】", "-----"):
        assert mark not in text
    assert text.startswith("こころ\n夏目漱石\n\n")
    assert text.rstrip().endswith("しまっておいて下さい。」")
    assert text.count("※") == 4  # the gaiji whose notes this copy had already lost
    kept = read_document(shared_corpus("cjk/kokoro-sjis.txt"), Reading(keep_markup=True)).text
    assert kept.count("｜") == 151


def test_the_cli_strips_the_markup_unless_told_to_keep_it(tmp_path):
    from typer.testing import CliRunner

    from bookgen.cli import app

    book = tmp_path / "kokoro.txt"
    book.write_text(MARKED, encoding="utf-8")
    for flags, expected in (([], PLAIN), (["--keep-markup"], MARKED)):
        dump = tmp_path / "dump.txt"
        result = CliRunner().invoke(app, ["corpus", str(book), "--dump", str(dump), *flags])
        assert result.exit_code == 0, result.output
        assert dump.read_text(encoding="utf-8") == expected
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--keep-markup" in help_text and "--encoding" in help_text
