"""Tests for bookgen.catalog, against a local HTTP server: they never reach the internet."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pooch
import pytest

from bookgen import catalog
from bookgen.catalog import CatalogEntry
from bookgen.errors import BookgenError

SHARED_CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
UNREACHABLE = "http://127.0.0.1:9/book.txt"  # the discard port: connection refused at once
BOOK = b"To be, or not to be, that is the question.\n" * 5000  # ~220 KB: several chunks


@dataclass
class Route:
    status: int
    body: bytes
    # Announced length; more than len(body) makes the server hang up mid-download.
    length: int | None = None
    send_length: bool = True
    delay: float = 0.0  # seconds before answering


@dataclass
class BookServer:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def serve(self, path: str, body: bytes, status: int = 200, **options: object) -> str:
        self.routes[path] = Route(status, body, **options)  # type: ignore[arg-type]
        return self.base_url + path


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): the connection closes after each response, so a short body is
    # seen by the client as a dropped connection.
    def do_GET(self) -> None:
        book_server: BookServer = self.server.book_server  # type: ignore[attr-defined]
        book_server.hits.append(self.path)
        route = book_server.routes.get(self.path, Route(404, b"not found"))
        time.sleep(route.delay)
        self.send_response(route.status)
        length = len(route.body) if route.length is None else route.length
        if route.send_length:
            self.send_header("Content-Length", str(length))
        try:
            self.end_headers()
            self.wfile.write(route.body)
        except ConnectionError:
            pass  # the client stopped waiting (the timeout test)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def server() -> Iterator[BookServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    host, port = httpd.server_address[:2]
    httpd.book_server = BookServer(f"http://{host}:{port}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield httpd.book_server  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A proxy would route 127.0.0.1 elsewhere; a user's corpus path would leak into lookups.
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv(catalog.CORPUS_PATH_VARIABLE, raising=False)
    # Never download into, or find books in, the user's own data folder.
    monkeypatch.setenv("BOOKGEN_DOWNLOAD_DIR", str(tmp_path / "user-downloads"))


def make_entry(url: str, body: bytes = BOOK, name: str = "shakespeare") -> CatalogEntry:
    return CatalogEntry(
        name=name,
        title="Tiny Shakespeare",
        author="William Shakespeare",
        url=url,
        sha256=hashlib.sha256(body).hexdigest(),
        filename="tinyshakespeare.txt",
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def failure_message(entry: CatalogEntry, dest: Path, **options: object) -> str:
    """The message of the BookgenError that downloading `entry` to `dest` raises: one line."""
    with pytest.raises(BookgenError) as caught:
        catalog.download(entry, dest, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- download ------------------------------------------------------------------------------


def test_download_writes_exact_bytes_and_reports_progress(
    server: BookServer, tmp_path: Path
) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK))
    dest = tmp_path / "corpora" / "shakespeare.txt"  # folder does not exist yet
    calls: list[tuple[int, int | None]] = []

    def progress(done: int, total: int | None) -> None:
        assert not dest.exists()  # nothing at dest until the whole book is in
        calls.append((done, total))

    assert catalog.download(entry, dest, progress=progress) == dest
    assert dest.read_bytes() == BOOK
    assert leftovers(dest.parent) == ["shakespeare.txt"]
    done = [count for count, _ in calls]
    assert len(calls) > 1 and done == sorted(set(done))
    assert calls[-1] == (len(BOOK), len(BOOK))
    assert dest.stat().st_mode & 0o777 == 0o644  # not private, as temporary files are


def test_progress_without_a_length(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK, send_length=False))
    calls: list[tuple[int, int | None]] = []
    catalog.download(entry, tmp_path / "shakespeare.txt", progress=lambda *call: calls.append(call))
    assert (tmp_path / "shakespeare.txt").read_bytes() == BOOK
    done = [count for count, _ in calls]
    assert len(calls) > 1 and done == sorted(set(done))
    assert {total for _, total in calls} == {None}
    # Counted in whole chunks: right to within one.
    assert len(BOOK) <= done[-1] < len(BOOK) + 64 * 1024


def test_download_is_silent(
    server: BookServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK))
    level = pooch.get_logger().level
    catalog.download(entry, tmp_path / "shakespeare.txt")
    assert capfd.readouterr() == ("", "")  # pooch would log "Downloading data from ..."
    assert pooch.get_logger().level == level


def test_correct_copy_is_not_downloaded_again(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK))
    dest = tmp_path / "shakespeare.txt"
    dest.write_bytes(BOOK)
    assert catalog.download(entry, dest) == dest
    assert server.hits == []


def test_checksum_mismatch_leaves_nothing(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", b"a different book\n"), body=BOOK)
    dest = tmp_path / "shakespeare.txt"
    message = failure_message(entry, dest)
    assert entry.sha256 in message
    assert hashlib.sha256(b"a different book\n").hexdigest() in message
    assert "changed upstream" in message and f"save it as {dest}" in message
    assert catalog.CORPUS_PATH_VARIABLE in message
    assert leftovers(tmp_path) == []


def test_interrupted_download_leaves_nothing(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK))

    def ctrl_c(done: int, total: int | None) -> None:
        raise KeyboardInterrupt  # as if pressed mid-download

    with pytest.raises(KeyboardInterrupt):
        catalog.download(entry, tmp_path / "shakespeare.txt", progress=ctrl_c)
    assert leftovers(tmp_path) == []


def test_http_404_says_how_to_get_the_book(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.base_url + "/missing.txt")
    dest = tmp_path / "shakespeare.txt"
    message = failure_message(entry, dest)
    assert "HTTP 404 Not Found" in message and "download it yourself" in message
    assert str(dest) in message
    assert catalog.CORPUS_PATH_VARIABLE in message and entry.filename in message
    assert leftovers(tmp_path) == []


def test_dropped_connection_is_a_failed_download(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK[:1000], length=len(BOOK)))
    dest = tmp_path / "shakespeare.txt"
    message = failure_message(entry, dest)
    assert "broke off mid-download" in message and "1000 bytes read" in message
    assert leftovers(tmp_path) == []


def test_unreachable_server_is_a_failed_download(tmp_path: Path) -> None:
    message = failure_message(make_entry(UNREACHABLE), tmp_path / "shakespeare.txt", timeout=2)
    assert "(Connection refused)" in message and "download it yourself" in message
    assert leftovers(tmp_path) == []


def test_silent_server_times_out(server: BookServer, tmp_path: Path) -> None:
    entry = make_entry(server.serve("/book.txt", BOOK, delay=0.5))
    message = failure_message(entry, tmp_path / "shakespeare.txt", timeout=0.1)
    assert "no answer within 0.1 s" in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", ["404", "mismatch", "dropped"])
def test_failed_redownload_keeps_existing_file(
    server: BookServer, tmp_path: Path, failure: str
) -> None:
    dest = tmp_path / "shakespeare.txt"
    dest.write_bytes(b"the old copy\n")
    if failure == "404":
        url = server.base_url + "/missing.txt"
    elif failure == "mismatch":
        url = server.serve("/book.txt", b"tampered\n")
    else:
        url = server.serve("/book.txt", BOOK[:70_000], length=len(BOOK))
    with pytest.raises(BookgenError):
        catalog.download(make_entry(url), dest)
    assert dest.read_bytes() == b"the old copy\n"
    assert leftovers(tmp_path) == ["shakespeare.txt"]


def test_unwritable_destination_folder(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where a folder should be\n")
    dest = tmp_path / "not-a-folder" / "shakespeare.txt"
    with pytest.raises(BookgenError, match="cannot write"):
        catalog.download(make_entry(UNREACHABLE), dest)


# --- resolve_name --------------------------------------------------------------------------


def test_download_dir_copy_is_used_first(tmp_path: Path) -> None:
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "shakespeare.txt").write_text("local\n")
    entries = {"shakespeare": make_entry(UNREACHABLE)}
    found = catalog.resolve_name("shakespeare", catalog=entries, downloads=corpora)
    assert found == corpora / "shakespeare.txt"


def test_finds_book_by_name_on_corpus_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "shakespeare.txt").write_text("by name\n")
    search = os.pathsep.join(["", str(tmp_path / "absent"), str(library), ""])
    monkeypatch.setenv(catalog.CORPUS_PATH_VARIABLE, search)
    corpora = tmp_path / "corpora"
    entries = {"shakespeare": make_entry(UNREACHABLE)}
    found = catalog.resolve_name("shakespeare", catalog=entries, downloads=corpora)
    assert found == library / "shakespeare.txt"
    assert not corpora.exists()  # used in place, nothing downloaded or copied


def test_finds_book_by_filename_in_sub_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "library"
    (library / "b" / "deep").mkdir(parents=True)
    (library / "c").mkdir()
    (library / "b" / "deep" / "tinyshakespeare.txt").write_text("by filename\n")
    (library / "c" / "tinyshakespeare.txt").write_text("sorted later\n")
    monkeypatch.setenv(catalog.CORPUS_PATH_VARIABLE, str(library))
    entries = {"shakespeare": make_entry(UNREACHABLE)}
    found = catalog.resolve_name("shakespeare", catalog=entries, downloads=tmp_path / "c")
    assert found == library / "b" / "deep" / "tinyshakespeare.txt"


def test_search_path_argument_overrides_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "diary.txt").write_text("from the environment\n")
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "diary.txt").write_text("from the argument\n")
    monkeypatch.setenv(catalog.CORPUS_PATH_VARIABLE, str(tmp_path / "env"))
    # Not in the catalog: a book on the search path needs no entry.
    found = catalog.resolve_name(
        "diary", catalog={}, downloads=tmp_path / "c", search_path=[tmp_path / "given"]
    )
    assert found == tmp_path / "given" / "diary.txt"


def test_downloads_once(server: BookServer, tmp_path: Path) -> None:
    entries = {"shakespeare": make_entry(server.serve("/book.txt", BOOK))}
    corpora = tmp_path / "corpora"
    first = catalog.resolve_name("shakespeare", catalog=entries, downloads=corpora)
    second = catalog.resolve_name("shakespeare", catalog=entries, downloads=corpora)
    assert first == second == corpora / "shakespeare.txt"
    assert first.read_bytes() == BOOK
    assert server.hits == ["/book.txt"]


def test_no_download_when_turned_off(server: BookServer, tmp_path: Path) -> None:
    entries = {"shakespeare": make_entry(server.serve("/book.txt", BOOK))}
    with pytest.raises(BookgenError, match="not downloaded"):
        catalog.resolve_name("shakespeare", catalog=entries, downloads=tmp_path, download=False)
    assert server.hits == []


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    entries = {
        "shakespeare": make_entry(UNREACHABLE),
        "moby-dick": make_entry(UNREACHABLE, name="moby-dick"),
    }
    with pytest.raises(BookgenError) as caught:
        catalog.resolve_name("hamlet", catalog=entries, downloads=tmp_path)
    message = str(caught.value)
    assert "'hamlet'" in message and "moby-dick, shakespeare" in message
    assert "path" in message


def test_rejects_names_that_are_not_names(tmp_path: Path) -> None:
    with pytest.raises(BookgenError, match="not a book name"):
        catalog.resolve_name("../secrets", catalog={}, downloads=tmp_path)


# --- names and arguments -------------------------------------------------------------------


def test_is_corpus_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a real file with no suffix\n")
    assert catalog.is_corpus_name("shakespeare")
    assert catalog.is_corpus_name("pride-and-prejudice")
    assert catalog.is_corpus_name("book_2")
    assert not catalog.is_corpus_name("notes")  # an existing path wins
    for path_like in ("book.txt", "books/hamlet", "*.txt", "Shakespeare", "", "./x"):
        assert not catalog.is_corpus_name(path_like), path_like


def test_resolve_inputs_maps_only_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("my own book\n")
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "shakespeare.txt").write_text("downloaded earlier\n")
    entries = {"shakespeare": make_entry(UNREACHABLE)}
    args = ["mine.txt", "shakespeare", "books/*.txt"]
    resolved = catalog.resolve_inputs(args, catalog=entries, downloads=corpora)
    assert resolved == ["mine.txt", str(corpora / "shakespeare.txt"), "books/*.txt"]


# --- the catalog file ----------------------------------------------------------------------


def test_real_catalog() -> None:
    entries = catalog.load_catalog()
    assert list(entries) == [
        "shakespeare",
        "pride-and-prejudice",
        "moby-dick",
        "little-women",
        "alice-in-wonderland",
        "sherlock-holmes",
    ]
    for name, entry in entries.items():
        assert entry.name == name
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert entry.url.startswith("https://") and entry.filename.endswith(".txt")


def test_catalog_is_package_data() -> None:
    # Read through importlib.resources, so a wheel or `pip install .` (no checkout) has it.
    installed = resources.files("bookgen") / "catalog.json"
    assert installed.is_file()
    assert catalog.load_catalog() == catalog.load_catalog(Path(str(installed)))


def test_download_dir_variable(
    server: BookServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKGEN_DOWNLOAD_DIR", str(tmp_path / "mine"))
    assert catalog.download_dir() == tmp_path / "mine"
    entries = {"shakespeare": make_entry(server.serve("/book.txt", BOOK))}
    found = catalog.resolve_name("shakespeare", catalog=entries)
    assert found == tmp_path / "mine" / "shakespeare.txt" and found.read_bytes() == BOOK


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are Linux's")
def test_download_dir_defaults_to_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOOKGEN_DOWNLOAD_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert catalog.download_dir() == tmp_path / "data" / "bookgen" / "corpora"


def test_real_catalog_matches_trusted_copies() -> None:
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"no trusted copies at {SHARED_CORPORA}")
    for entry in catalog.load_catalog().values():
        copies = sorted(SHARED_CORPORA.rglob(entry.filename))
        assert copies, entry.filename
        assert hashlib.sha256(copies[0].read_bytes()).hexdigest() == entry.sha256, entry.name


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "not valid JSON"),
        ("{}", "JSON list"),
        ('[{"name": "x"}]', "exactly the keys"),
        (None, "sha256"),
        (None, "twice"),
    ],
)
def test_bad_catalog_files(tmp_path: Path, content: str | None, complaint: str) -> None:
    good = {key: "x" for key in ("name", "title", "author", "url", "filename")}
    good["sha256"] = "0" * 64
    if complaint == "sha256":
        content = json.dumps([{**good, "sha256": "ABC"}])
    elif complaint == "twice":
        content = json.dumps([good, good])
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(BookgenError, match=complaint):
        catalog.load_catalog(path)


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(BookgenError, match="cannot read"):
        catalog.load_catalog(tmp_path / "nowhere.json")
