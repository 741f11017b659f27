"""Benchmark: the encoding bookgen reads a book in, against chardet and charset-normalizer.

Issue 24 asked for a detector chosen on "accuracy and speed on real books". This builds the
research's test files (docs/research/issue-24-encodings.md) in memory from ../shared/corpora:
红楼梦 (GB18030 as shared, without its byte-order mark, UTF-8, Big5), こころ (Shift_JIS as
shared, EUC-JP, UTF-8) and the Gutenberg books (their own bytes, UTF-8, Windows-1252, Latin-1).
No book is at hand for Korean, Russian, Greek, other Western languages or the Central European
ones: their files (named mo-LANG) hold the messages of the gettext catalogues in
/usr/share/locale, real prose of user interfaces, not books. On each file it measures:

- bookgen: the encoding `bookgen corpus` says (corpus.scan_book on the file), right when the
  bytes decoded in it are the true text; the CPU time of that pass 1, and of the same pass with
  that encoding forced (the difference is what choosing costs);
- chardet and charset-normalizer on the sample bookgen gives its detector (the first MiB, cut
  at a line end): the pick, right when the whole file decodes in it to the true text (after
  bookgen's map of subsets to supersets; the verdict on the pick as named is in the JSON), and
  the CPU time;
- the same three on random 64 KiB windows of every file in a legacy encoding (a short book is
  read whole as its sample);
- what the encoding work costs an English book: Moby Dick read by this checkout and by main
  before issue 24 (--baseline, unpacked with git archive), in turns, each in a fresh process.

Prints tables and writes benchmarks/results/encodings.json. Times are CPU seconds of the
process (time.process_time), best of --repeats, because the wall time of a shared machine
doubles under load; the load average is recorded beside them. Skipped, with a message, where
../shared/corpora is absent.

    python benchmarks/encodings.py      # 2.5 minutes of CPU; 10 minutes at a load of 10 on 2 cores
"""

from __future__ import annotations

import argparse
import codecs
import collections
import gettext
import importlib
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bookgen.context import processor_name

# The detectors get exactly the sample bookgen gives its own, and a pick of windows-1252 decodes
# as bookgen decodes it (its table keeps the five bytes Windows-1252 leaves undefined).
from bookgen.corpus import Reading, scan_book
from bookgen.encodings import (
    SAMPLE_BYTES,
    WINDOWS_1252,
    legacy_guesses,
    looks_double_byte,
    normalised,
    sample,
)
from bookgen.errors import BookgenError

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
LOCALE = Path("/usr/share/locale")
BASELINE = "cfaa607"  # main just before issue 24 was merged (the first parent of 36acb0a)
ENGLISH_BOOK = "gutenberg/moby-dick.txt"
GB18030_BOM = b"\x84\x31\x95\x33"

# Languages without a book at hand: each catalogue text is written in every encoding named
# here, keeping only the characters all of them encode. The research's seven languages, plus
# more Western ones (the highest shares of non-ASCII letters: Icelandic, Finnish, Portuguese)
# and the other languages written in Windows-1250.
CATALOGUES = {
    "ko": ("euc_kr", "cp949", "utf-8"),
    "ru": ("cp1251", "koi8_r", "iso8859_5", "utf-8"),
    "el": ("cp1253", "iso8859_7", "utf-8"),
    "fr": ("cp1252", "latin-1", "utf-8"),
    "de": ("cp1252", "latin-1", "utf-8"),
    "es": ("cp1252", "latin-1"),
    "pt": ("cp1252", "latin-1"),
    "it": ("cp1252", "latin-1"),
    "sv": ("cp1252", "latin-1"),
    "fi": ("cp1252", "latin-1"),
    "is": ("cp1252", "latin-1"),
    "pl": ("cp1250", "iso8859_2", "utf-8"),
    "cs": ("cp1250", "iso8859_2", "utf-8"),
    "sk": ("cp1250", "iso8859_2"),
    "hu": ("cp1250", "iso8859_2"),
    "sl": ("cp1250", "iso8859_2"),
    "hr": ("cp1250", "iso8859_2"),
    "ro": ("cp1250", "iso8859_2"),
}
NON_LATIN = ("ko", "ru", "el")
# Romanian's ș and ț (comma below) are newer than its legacy encodings, whose files hold the
# cedilla forms ş and ţ in their place.
LEGACY_FORMS = {"ro": str.maketrans("șțȘȚ", "şţŞŢ")}
# cp932 characters that JIS X 0208 (EUC-JP) has at other code points (～ is 〜 there).
CP932_TO_JIS = str.maketrans(
    {"\uff5e": "\u301c", "\u2225": "\u2016", "\uff0d": "\u2212", "\uffe0": "\u00a2",
     "\uffe1": "\u00a3", "\uffe2": "\u00ac"}
)  # fmt: skip
# What a Latin-1 or Windows-1252 copy of an English book writes for a character it lacks.
PLAIN = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u2013": "-",
     "\u2026": "...", "\u0152": "OE", "\u0153": "oe"}
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """A test file: its bytes, the encoding they were written in, where the text comes from."""

    name: str
    encoding: str  # the truth, a name Python's codecs know
    data: bytes
    source: str

    @property
    def text(self) -> str:
        return self.data.decode(self.encoding).removeprefix("\ufeff")


# --- the test files ----------------------------------------------------------------------------


def _sample(path: Path) -> bytes:
    """What bookgen's detector reads of `path` (its first SAMPLE_BYTES, cut at a line end)."""
    with open(path, "rb") as book:
        return sample(book.read(SAMPLE_BYTES))


def encodable(text: str, encodings: Sequence[str]) -> tuple[str, int]:
    """`text` without the characters that one of `encodings` lacks, and how many were dropped."""

    def fits(char: str) -> bool:
        for encoding in encodings:
            try:
                data = char.encode(encoding)
            except UnicodeEncodeError:
                return False
            if encoding == "euc_kr" and len(data) > 2:
                # Python writes a Hangul syllable KS X 1001 lacks as an 8-byte make-up sequence
                # (its annex 3), which EUC-KR files in the wild do not hold and cp949 reads as
                # jamo: such a syllable counts as lacking.
                return False
        return True

    lacking = {ord(char): None for char in set(text) if not fits(char)}
    kept = text.translate(lacking)
    return kept, len(text) - len(kept)


def chinese(raw: bytes, notes: list[str]) -> list[Case]:
    source = "红楼梦, ../shared/corpora/cjk/hongloumeng-gb18030.txt"
    text = raw.decode("gb18030").removeprefix("\ufeff")
    big5, dropped = encodable(text, ["big5"])
    notes.append(
        f"红楼梦 in Big5: the simplified text less the {dropped:,} of its {len(text):,} "
        "characters that Big5 lacks (simplified forms; no conversion to traditional)"
    )
    return [
        Case("hongloumeng.gb18030-bom", "gb18030", raw, f"{source}, as shared"),
        Case("hongloumeng.gb18030", "gb18030", raw.removeprefix(GB18030_BOM), f"{source}, no BOM"),
        Case("hongloumeng.utf-8", "utf-8", text.encode("utf-8"), source),
        Case("hongloumeng.utf-8-sig", "utf-8-sig", text.encode("utf-8-sig"), source),
        Case("hongloumeng.big5", "big5", big5.encode("big5"), f"{source}, {dropped:,} dropped"),
    ]


def japanese(raw: bytes, notes: list[str]) -> list[Case]:
    source = "こころ, ../shared/corpora/cjk/kokoro-sjis.txt"
    text = raw.decode("cp932")
    jis, dropped = encodable(text.translate(CP932_TO_JIS), ["euc_jp"])
    notes.append(f"こころ in EUC-JP: cp932's ～ and kin mapped to JIS, then {dropped} dropped")
    return [
        Case("kokoro.cp932", "cp932", raw, f"{source}, as shared (Shift_JIS)"),
        Case("kokoro.euc-jp", "euc_jp", jis.encode("euc_jp"), f"{source}, JIS forms"),
        Case("kokoro.utf-8", "utf-8", text.encode("utf-8"), source),
    ]


def western(path: Path) -> list[Case]:
    """The book's own bytes, and copies in the other encodings a Western book comes in."""
    raw = path.read_bytes()
    try:
        own, text = "utf-8", raw.decode("utf-8")
    except UnicodeDecodeError:
        own, text = "cp1252", raw.decode("cp1252")
    source = f"{path.parent.name}/{path.name}, ../shared/corpora"
    cases = [Case(f"{path.stem}.own-{own}", own, raw, f"{source}, as shared")]
    if text.isascii():
        return cases
    if own == "cp1252":
        cases.append(Case(f"{path.stem}.utf-8", "utf-8", text.encode("utf-8"), source))
    else:
        copy = encodable(text.translate(PLAIN), ["cp1252"])[0]
        cases.append(Case(f"{path.stem}.cp1252", "cp1252", copy.encode("cp1252"), source))
    copy = encodable(text.translate(PLAIN), ["latin-1"])[0]
    cases.append(Case(f"{path.stem}.latin-1", "latin-1", copy.encode("latin-1"), source))
    return cases


def catalogue_text(folder: Path, language: str, limit: int = 300_000) -> tuple[str, int]:
    """About `limit` characters of translated messages from `folder`/LANGUAGE/LC_MESSAGES, one
    a line (those of 40 characters or more, differing from the English; in a non-Latin language
    a fifth of them non-ASCII letters), NFC; and the number of catalogues read."""
    lines: list[str] = []
    size = read = 0
    for mo in sorted((folder / language / "LC_MESSAGES").glob("*.mo")):
        if mo.name.startswith("iso_"):  # iso-codes: names of countries and languages, no prose
            continue
        try:
            with mo.open("rb") as file:
                messages = gettext.GNUTranslations(file)._catalog  # no public way to list them
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        read += 1
        for english, message in messages.items():
            if not isinstance(message, str) or len(message) < 40 or message == english:
                continue
            foreign = sum(char.isalpha() and not char.isascii() for char in message)
            if language in NON_LATIN and foreign < 0.2 * len(message):
                continue
            lines.append(message)
            size += len(message)
            if size > limit:
                return unicodedata.normalize("NFC", "\n".join(lines) + "\n"), read
    return unicodedata.normalize("NFC", "\n".join(lines) + "\n"), read


def catalogue_cases(folder: Path, notes: list[str]) -> list[Case]:
    cases = []
    for language, encodings in CATALOGUES.items():
        text, read = catalogue_text(folder, language)
        if len(text) < 10_000:
            notes.append(f"mo-{language}: skipped, too few gettext messages in {folder}")
            continue
        text, dropped = encodable(text.translate(LEGACY_FORMS.get(language, {})), encodings)
        source = f"gettext catalogues {folder}/{language} ({read} files): UI messages, not a book"
        notes.append(f"mo-{language}: {len(text):,} characters; {dropped:,} dropped")
        for encoding in encodings:
            cases.append(Case(f"mo-{language}.{encoding}", encoding, text.encode(encoding), source))
    return cases


def build_cases(corpora: Path, locale: Path, notes: list[str]) -> list[Case]:
    cases: list[Case] = []
    books = {"hongloumeng": chinese, "kokoro": japanese}
    for path in sorted((corpora / "cjk").glob("*.txt")):
        build = books.get(path.stem.split("-")[0])
        if build is not None:
            cases += build(path.read_bytes(), notes)
    for path in [*sorted((corpora / "gutenberg").glob("*.txt")), corpora / "tinyshakespeare.txt"]:
        if path.exists():
            cases += western(path)
    return cases + catalogue_cases(locale, notes)


# --- judging and timing ------------------------------------------------------------------------


def decoded(data: bytes, encoding: str) -> str:
    """The bytes as bookgen decodes them in `encoding` (its own table for windows-1252)."""
    if encoding == "windows-1252":
        return codecs.charmap_decode(data, "strict", WINDOWS_1252)[0]
    return data.decode(encoding)


def verdict(data: bytes, encoding: str | None, truth: str) -> str:
    """'right' when `data` decoded in `encoding` is `truth` (a leading BOM aside), else why not."""
    if encoding is None:
        return "no answer"
    try:
        text = decoded(data, encoding).removeprefix("\ufeff")
    except LookupError:
        return f"{encoding}: Python has no such codec"
    except UnicodeDecodeError as error:
        return f"not valid {encoding} at byte {error.start:,}"
    if text == truth:
        return "right"
    if len(text) != len(truth):
        return f"{len(text):,} characters for the text's {len(truth):,}"
    differ = sum(a != b for a, b in zip(text, truth, strict=True))
    return f"{differ:,} of {len(truth):,} characters differ"


def timed(call: Callable[[], object], repeats: int) -> tuple[object, float]:
    """call()'s result and its best CPU time in seconds over `repeats` calls."""
    best = float("inf")
    for _ in range(repeats):
        begin = time.process_time()
        result = call()
        best = min(best, time.process_time() - begin)
    return result, best


def bookgen_reads(path: Path, data: bytes, truth: str, repeats: int, forced: bool = True) -> dict:
    """What `bookgen corpus` says of the file at `path`, and the CPU time of its pass 1; with
    `forced`, also of the pass with that encoding forced: what is left is the choosing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scan, cpu = timed(lambda: scan_book(path), repeats)
        except BookgenError as error:
            return {"pick": None, "verdict": f"refused: {error}", "pass1_cpu_s": 0.0}
        if forced:
            reading = Reading(encoding=scan.encoding)
            forced_cpu = timed(lambda: scan_book(path, reading=reading), repeats)[1]
    row = {
        "pick": scan.encoding,
        "confidence": scan.confidence,
        "verdict": verdict(data, scan.encoding, truth),
        "pass1_cpu_s": round(cpu, 4),
        "warnings": sorted({str(w.message).replace(f"{path}: ", "") for w in caught}),
    }
    if forced:
        row["pass1_forced_cpu_s"] = round(forced_cpu, 4)
        row["choosing_cpu_s"] = round(cpu - forced_cpu, 4)
    return row


def chardet_pick(sample: bytes) -> tuple[str | None, float | None]:
    import chardet

    found = chardet.detect(sample, max_bytes=len(sample))  # all of it, as bookgen asks
    return found["encoding"], found["confidence"]


def charset_normalizer_pick(sample: bytes) -> tuple[str | None, float | None]:
    import charset_normalizer

    best = charset_normalizer.from_bytes(sample).best()
    # 1 - chaos: the confidence its chardet-like detect() reports
    return (best.encoding, 1.0 - best.chaos) if best is not None else (None, None)


DETECTORS = {
    "chardet": ("chardet", chardet_pick),
    "charset-normalizer": ("charset_normalizer", charset_normalizer_pick),
}


def installed_detectors(notes: list[str]) -> dict[str, str]:
    """The detectors this environment has, with their versions."""
    found = {}
    for name, (module, _) in DETECTORS.items():
        try:
            importlib.import_module(module)
            found[name] = metadata.version(name)
        except (ImportError, metadata.PackageNotFoundError):
            notes.append(f"{name} is not installed: its columns are left out")
    return found


def detector_reads(name: str, sample: bytes, data: bytes, truth: str, repeats: int) -> dict:
    (pick, confidence), cpu = timed(lambda: DETECTORS[name][1](sample), repeats)
    try:
        as_named, mapped = codecs.lookup(pick).name, normalised(pick)
    except (LookupError, TypeError):  # None, or a name Python does not know
        as_named = mapped = pick
    return {
        "pick": pick,
        "confidence": None if confidence is None else round(confidence, 3),
        "verdict": verdict(data, mapped, truth),  # through bookgen's superset map
        "verdict_as_named": verdict(data, as_named, truth),
        "cpu_s": round(cpu, 4),
    }


def measure_file(case: Case, folder: Path, detectors: Sequence[str], repeats: int) -> dict:
    path = folder / f"{case.name}.txt"
    path.write_bytes(case.data)
    truth, sample = case.text, _sample(path)
    row = {
        "file": case.name,
        "truth": case.encoding,
        "bytes": len(case.data),
        "chars": len(truth),
        "source": case.source,
        "sample_bytes": len(sample),
        "bookgen": bookgen_reads(path, case.data, truth, repeats),
    }
    for name in detectors:
        row[name] = detector_reads(name, sample, case.data, truth, repeats)
    path.unlink()
    return row


# --- windows: a short book is all sample -------------------------------------------------------


def windows(data: bytes, size: int, count: int, rng: random.Random) -> list[bytes]:
    """Up to `count` pieces of about `size` bytes at random places, cut to whole lines (a line
    end never falls inside a character of these encodings), leaving out pure-ASCII ones, which
    every detector reads right."""
    if len(data) <= size:
        count = 1  # a file no longer than a window: one window, not the same one many times
    found: list[bytes] = []
    for _ in range(50 * count):
        if len(found) == count:
            break
        start = rng.randrange(max(1, len(data) - size))
        piece = data[start : start + size]
        piece = piece[piece.find(b"\n") + 1 : piece.rfind(b"\n") + 1]
        if piece and not piece.isascii():
            found.append(piece)
    return found


def measure_windows(case: Case, pieces: list[bytes], folder: Path, detectors: Sequence[str]):
    """For each reader: windows read right, its wrong picks counted, CPU ms per window."""
    readers = ["bookgen", *detectors]
    right = dict.fromkeys(readers, 0)
    wrong: dict[str, collections.Counter] = {name: collections.Counter() for name in readers}
    cpu = dict.fromkeys(readers, 0.0)
    path = folder / "window.txt"
    for piece in pieces:
        path.write_bytes(piece)
        truth = piece.decode(case.encoding).removeprefix("\ufeff")
        for name in readers:
            if name == "bookgen":
                row = bookgen_reads(path, piece, truth, repeats=1, forced=False)
                picked, seconds = row["pick"], row["pass1_cpu_s"]
                judged = row["verdict"]
            else:
                row = detector_reads(name, _sample(path), piece, truth, repeats=1)
                picked, seconds, judged = row["pick"], row["cpu_s"], row["verdict"]
            cpu[name] += seconds
            if judged == "right":
                right[name] += 1
            else:
                wrong[name][str(picked)] += 1
    path.unlink()
    return {
        "file": case.name,
        "windows": len(pieces),
        **{
            name: {
                "right": right[name],
                "wrong_picks": dict(wrong[name].most_common()),
                "cpu_ms_per_window": round(1000 * cpu[name] / max(1, len(pieces)), 2),
            }
            for name in readers
        },
    }


# --- what the encoding work costs an English book ----------------------------------------------

CHILD = """\
import hashlib, json, sys, time
begin = time.perf_counter()
from bookgen.corpus import read_document
imported, cpu = time.perf_counter(), time.process_time()
text = read_document(sys.argv[1]).text
print(json.dumps({"module": sys.modules["bookgen"].__file__, "import_s": imported - begin,
    "read_s": time.perf_counter() - imported, "read_cpu_s": time.process_time() - cpu,
    "chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}))
"""


def unpack(commit: str, folder: Path) -> Path:
    """bookgen's package as it was at `commit`, unpacked under `folder` (git archive)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "bookgen"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def read_in_turns(book: Path, checkouts: dict[str, Path], pairs: int) -> dict[str, list[dict]]:
    """Each checkout reads `book` in a fresh process, in turns (A B A B ...: drift in the
    machine's speed hits both alike), after one round not counted."""
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for round_ in range(pairs + 1):
        for name, root in checkouts.items():
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(book)],
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(root)},
                capture_output=True,
                text=True,
                check=True,
            )
            run = json.loads(done.stdout.splitlines()[-1])
            if not run["module"].startswith(str(root)):
                raise SystemExit(f"{name}: imported {run['module']}, not the one under {root}")
            if round_:
                runs[name].append(run)
    return runs


def english_cost(corpora: Path, commit: str, pairs: int, repeats: int) -> dict:
    book = corpora / ENGLISH_BOOK
    sample = _sample(book)
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"now": ROOT, "before_24": unpack(commit, Path(tmp))}
        runs = read_in_turns(book, checkouts, pairs)
    median = {
        name: {key: round(statistics.median(r[key] for r in rows), 4)
               for key in ("read_cpu_s", "read_s", "import_s")}
        for name, rows in runs.items()
    }  # fmt: skip
    ratios = [
        a["read_cpu_s"] / b["read_cpu_s"]
        for a, b in zip(runs["now"], runs["before_24"], strict=True)
    ]
    return {
        "book": ENGLISH_BOOK,
        "bytes": book.stat().st_size,
        "baseline": commit,
        "pairs": pairs,
        "what": "read_document(book) in a fresh process, medians; import_s: bookgen.corpus",
        **median,
        "added_read_cpu_s": round(
            median["now"]["read_cpu_s"] - median["before_24"]["read_cpu_s"], 4
        ),
        "read_cpu_ratio_median_of_pairs": round(statistics.median(ratios), 3),
        "same_text": len({r["sha256"] for rows in runs.values() for r in rows}) == 1,
        "of_which_cpu_s": {
            "legacy_guesses(sample)": round(timed(lambda: legacy_guesses(sample), repeats)[1], 4),
            "mojibake guard (looks_double_byte)": round(
                timed(lambda: looks_double_byte(sample), repeats)[1], 4
            ),
        },
    }


def import_seconds(module: str, runs: int = 5) -> float:
    """The median wall time of `import module` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(runs)
    ]  # fmt: skip
    return round(statistics.median(times), 4)


# --- report ------------------------------------------------------------------------------------


def shown(reading: dict) -> str:
    """A pick as the table shows it: name, confidence, ✓ or ✗."""
    confidence = reading.get("confidence")
    sure = "" if confidence is None else f" {confidence:.2f}"
    return f"{reading['pick']}{sure} {'✓' if reading['verdict'] == 'right' else '✗'}"


def print_header(detectors: Sequence[str]) -> None:
    line = f"{'file':31} {'truth':9} {'KiB':>5}  {'bookgen':22} {'pass 1':>6} {'choose':>6}"
    for name in detectors:
        line += f"  {name:26} {'CPU s':>6}"
    print(line)


def print_row(row: dict, detectors: Sequence[str]) -> None:
    ours = row["bookgen"]
    line = f"{row['file']:31} {row['truth']:9} {row['bytes'] / 1024:5.0f}  {shown(ours):22}"
    line += f" {ours.get('pass1_cpu_s', 0):6.3f} {ours.get('choosing_cpu_s', 0):6.3f}"
    for name in detectors:
        line += f"  {shown(row[name]):26} {row[name]['cpu_s']:6.3f}"
    print(line, flush=True)


def files_summary(rows: list[dict], detectors: Sequence[str]) -> dict:
    sample_mb = sum(row["sample_bytes"] for row in rows) / 1e6
    summary = {
        "bookgen": {
            "right": sum(row["bookgen"]["verdict"] == "right" for row in rows),
            "files": len(rows),
            "pass1_cpu_s_total": round(
                sum(row["bookgen"].get("pass1_cpu_s", 0) for row in rows), 3
            ),
            "choosing_cpu_s_total": round(
                sum(row["bookgen"].get("choosing_cpu_s", 0) for row in rows), 3
            ),
            "wrong": [row["file"] for row in rows if row["bookgen"]["verdict"] != "right"],
        }
    }
    for name in detectors:
        summary[name] = {
            "right": sum(row[name]["verdict"] == "right" for row in rows),
            "right_as_named": sum(row[name]["verdict_as_named"] == "right" for row in rows),
            "files": len(rows),
            "cpu_s_per_sample_mb": round(sum(row[name]["cpu_s"] for row in rows) / sample_mb, 4),
            "wrong": {r["file"]: r[name]["pick"] for r in rows if r[name]["verdict"] != "right"},
        }
    return summary


def print_windows(rows: list[dict], readers: Sequence[str], size: int) -> dict:
    print(f"\n{size // 1024} KiB windows, cut to whole lines, not pure ASCII: right / windows")
    print(f"{'file':31} " + "  ".join(f"{name:>18}" for name in readers) + "  wrong picks")
    for row in rows:
        cells = "  ".join(f"{row[name]['right']:>13} / {row['windows']:<2}" for name in readers)
        wrong = "; ".join(
            f"{name}: " + ", ".join(f"{pick} x{n}" for pick, n in row[name]["wrong_picks"].items())
            for name in readers
            if row[name]["wrong_picks"]
        )
        print(f"{row['file']:31} {cells}  {wrong}", flush=True)
    total = sum(row["windows"] for row in rows)
    summary = {
        name: {
            "right": sum(row[name]["right"] for row in rows),
            "windows": total,
            "cpu_ms_per_window": round(
                sum(row[name]["cpu_ms_per_window"] * row["windows"] for row in rows) / total, 2
            ),
        }
        for name in readers
    }
    print(f"{'all':31} " + "  ".join(f"{s['right']:>13} / {total}" for s in summary.values()))
    return summary


def print_english(cost: dict) -> None:
    now, before = cost["now"], cost["before_24"]
    print(
        f"\n{cost['book']}, read_document in a fresh process, median of {cost['pairs']} pairs: "
        f"{now['read_cpu_s']:.3f} s CPU now, {before['read_cpu_s']:.3f} s before issue 24 "
        f"({cost['baseline']}): {cost['added_read_cpu_s']:+.3f} s, "
        f"x{cost['read_cpu_ratio_median_of_pairs']:.2f}; same text: {cost['same_text']}. "
        f"Of which: " + ", ".join(f"{k} {v:.4f} s" for k, v in cost["of_which_cpu_s"].items())
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--locale", type=Path, default=LOCALE, help="gettext catalogues")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per file (best)")
    parser.add_argument("--windows", type=int, default=30, help="per file in a legacy encoding")
    parser.add_argument("--window-kib", type=int, default=64)
    parser.add_argument("--random-seed", type=int, default=24, help="where the windows fall")
    parser.add_argument("--baseline", default=BASELINE, help="commit for the English book's "
                        "cost (main before issue 24); '' leaves it out")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=7, help="English book reads per side")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/encodings.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.corpora.is_dir():
        print(f"skipped: {args.corpora} not found; this benchmark reads the shared books there")
        return
    notes: list[str] = []
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    processor = processor_name()
    print(f"{processor}, {os.cpu_count()} cores, load average {load['start']}")
    found = installed_detectors(notes)
    detectors = list(found)
    cases = build_cases(args.corpora, args.locale, notes)
    print_header(detectors)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for case in cases:
            rows.append(measure_file(case, Path(tmp), detectors, args.repeats))
            print_row(rows[-1], detectors)
        size = args.window_kib * 1024
        window_rows = []
        for case in cases:
            if not case.encoding.startswith("utf"):
                rng = random.Random(f"{args.random_seed}:{case.name}")  # a file's own windows
                pieces = windows(case.data, size, args.windows, rng)
                window_rows.append(measure_windows(case, pieces, Path(tmp), detectors))
    summary = files_summary(rows, detectors)
    print(
        "\nwhole files right: "
        + ", ".join(f"{k} {v['right']}/{v['files']}" for k, v in summary.items())
    )
    window_summary = print_windows(window_rows, ["bookgen", *detectors], size)
    english = None
    if args.baseline and (args.corpora / ENGLISH_BOOK).exists():
        english = english_cost(args.corpora, args.baseline, args.pairs, args.repeats)
        print_english(english)
    imports = {DETECTORS[name][0]: import_seconds(DETECTORS[name][0]) for name in detectors}
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"import (s, median of 5, wall): {imports}; load average at the end {load['end']}")
    for note in notes:
        print(f"note: {note}")
    report = {
        "benchmark": "encoding chosen for a book: bookgen vs chardet vs charset-normalizer",
        "command": " ".join(["python benchmarks/encodings.py", *sys.argv[1:]]),
        "processor": processor,
        "cores": os.cpu_count(),
        "load_average": load,
        "python": platform.python_version(),
        "versions": found,
        "times": f"CPU seconds of the process (time.process_time), best of {args.repeats}",
        "notes": notes,
        "files": rows,
        "summary": summary,
        "windows": {
            "bytes": size,
            "per_file": args.windows,
            "seed": args.random_seed,
            "files": window_rows,
            "summary": window_summary,
        },  # fmt: skip
        "import_s": imports,
        "english_book": english,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
