"""Books known by name: `bookgen train shakespeare` resolves "shakespeare" to a local text file.

The catalog of names (title, author, URL, SHA-256, usual file name) is `bookgen/catalog.json`,
installed with the package and read through `importlib.resources`. A name is looked up, in order:

1. `<name>.txt` in the download folder: `$BOOKGEN_DOWNLOAD_DIR` when set, otherwise the user's
   data folder, `platformdirs.user_data_path("bookgen", appauthor=False) / "corpora"`
   (`~/.local/share/bookgen/corpora` on Linux). Never inside the package: it may be read-only.
2. `<name>.txt` or the catalog's file name in the folders on `$BOOKGEN_CORPUS_PATH` (separated
   like `PATH`), sub-folders too; a book found there is used in place, and need not be in the
   catalog.
3. A download, once, from the catalog's URL into the download folder, by pooch: checked against
   the catalog's SHA-256 and moved into place only when whole and correct, so a failed,
   interrupted or altered download never leaves a half-written book to be trained on later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from bookgen.errors import BookgenError

if TYPE_CHECKING:
    import requests

CATALOG_RESOURCE = "catalog.json"  # package data of `bookgen`
CORPUS_PATH_VARIABLE = "BOOKGEN_CORPUS_PATH"
DOWNLOAD_DIR_VARIABLE = "BOOKGEN_DOWNLOAD_DIR"

# Called with (bytes so far, total bytes or None when the server does not say).
Progress = Callable[[int, int | None], None]

_NAME = re.compile(r"[a-z0-9_-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "bookgen (LSTM language models on public-domain books)"


@dataclass(frozen=True)
class CatalogEntry:
    """One book bookgen can fetch by name."""

    name: str
    title: str
    author: str
    url: str
    sha256: str
    filename: str


def download_dir() -> Path:
    """Where downloaded books are kept: `$BOOKGEN_DOWNLOAD_DIR`, else the user's data folder."""
    value = os.environ.get(DOWNLOAD_DIR_VARIABLE)
    if value:
        return Path(value).expanduser()
    return platformdirs.user_data_path("bookgen", appauthor=False) / "corpora"


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """Read the catalog (by default the one installed with bookgen), keyed by name, in order."""
    source = resources.files("bookgen") / CATALOG_RESOURCE if path is None else Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise BookgenError(f"cannot read the book catalog {source}: {error.strerror}") from error
    except ValueError as error:
        raise BookgenError(f"the book catalog {source} is not valid JSON: {error}") from error
    if not isinstance(raw, list):
        raise BookgenError(f"the book catalog {source} must be a JSON list of books")
    catalog: dict[str, CatalogEntry] = {}
    for index, item in enumerate(raw):
        entry = _parse_entry(item, f"{source}, entry {index}")
        if entry.name in catalog:
            raise BookgenError(f"{source}: the name {entry.name!r} appears twice")
        catalog[entry.name] = entry
    return catalog


def _parse_entry(item: Any, where: str) -> CatalogEntry:
    keys = [field.name for field in fields(CatalogEntry)]
    if not isinstance(item, dict) or sorted(item) != sorted(keys):
        raise BookgenError(f"{where}: a book needs exactly the keys {', '.join(keys)}")
    if not all(isinstance(item[key], str) and item[key] for key in keys):
        raise BookgenError(f"{where}: every value must be a non-empty string")
    entry = CatalogEntry(**item)
    if not _NAME.fullmatch(entry.name):
        raise BookgenError(f"{where}: the name {entry.name!r} must be lowercase a-z, 0-9, - or _")
    if not _SHA256.fullmatch(entry.sha256):
        raise BookgenError(f"{where}: sha256 must be 64 lowercase hex digits")
    if Path(entry.filename).name != entry.filename:
        raise BookgenError(f"{where}: filename {entry.filename!r} must be a bare file name")
    return entry


def is_corpus_name(arg: str) -> bool:
    """True when `arg` means a book name rather than a file: no such path, and a bare word."""
    # An existing file or folder always wins, so a file called "shakespeare" is never shadowed.
    return bool(_NAME.fullmatch(arg)) and not os.path.lexists(arg)


def resolve_inputs(args: Sequence[str], **kwargs: Any) -> list[str]:
    """Replace each book name in `args` by its local path; paths and globs pass through as-is."""
    return [str(resolve_name(arg, **kwargs)) if is_corpus_name(arg) else arg for arg in args]


def resolve_name(
    name: str,
    *,
    catalog: dict[str, CatalogEntry] | None = None,
    downloads: Path | None = None,
    search_path: Sequence[Path] | None = None,
    download: bool = True,
    progress: Progress | None = None,
) -> Path:
    """The local text file for book `name`, downloading it into `downloads` if need be.

    `downloads` defaults to `download_dir()`, `search_path` to the folders on
    `$BOOKGEN_CORPUS_PATH`.
    """
    if not _NAME.fullmatch(name):
        # Also keeps a name from steering the download outside the download folder ("../x").
        raise BookgenError(f"{name!r} is not a book name (lowercase a-z, 0-9, - or _)")
    catalog = load_catalog() if catalog is None else catalog
    downloads = download_dir() if downloads is None else Path(downloads)
    entry = catalog.get(name)
    local = downloads / f"{name}.txt"
    if local.is_file():
        return local
    found = _search(name, entry, _corpus_path() if search_path is None else search_path)
    if found is not None:
        return found
    if entry is None:
        raise BookgenError(_unknown_name_message(name, catalog))
    if not download:
        raise BookgenError(
            f"the book {name!r} is not downloaded yet and downloading is off; "
            f"save it as {local} or set {CORPUS_PATH_VARIABLE} to a folder that has "
            f"{entry.filename}"
        )
    return _download(entry, local, progress=progress)


def _corpus_path() -> list[Path]:
    value = os.environ.get(CORPUS_PATH_VARIABLE, "")
    return [Path(part) for part in value.split(os.pathsep) if part]


def _search(name: str, entry: CatalogEntry | None, folders: Sequence[Path]) -> Path | None:
    """First file called `<name>.txt` or the catalog's filename in the folders, in order."""
    file_names = [f"{name}.txt"] if entry is None else [f"{name}.txt", entry.filename]
    for folder in map(Path, folders):
        for file_name in file_names:
            if (folder / file_name).is_file():
                return folder / file_name
        # Sorted so that the same tree always gives the same book, whatever the file system.
        hits = sorted(
            hit for file_name in file_names for hit in folder.rglob(file_name) if hit.is_file()
        )
        if hits:
            return hits[0]
    return None


def _unknown_name_message(name: str, catalog: dict[str, CatalogEntry]) -> str:
    known = ", ".join(sorted(catalog)) or "none"
    return (
        f"unknown book {name!r} (known names: {known}); "
        f"give the path to a text file instead, or set {CORPUS_PATH_VARIABLE} to a folder "
        f"that has {name}.txt"
    )


def download(
    entry: CatalogEntry,
    dest: Path,
    *,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch `entry` to `dest`, checking its SHA-256; `dest` appears whole or not at all.

    A `dest` that already has the right SHA-256 is kept as it is, without a download.
    """
    # pooch and requests are imported here, not above: requests imports chardet, and a book read
    # from disk should load neither.
    import pooch
    import requests

    dest = Path(dest)
    fetcher = _Fetcher(progress, timeout)
    try:
        with _quiet_pooch():
            # Pooch downloads into a temporary file in dest's folder, checks the hash, then
            # renames it to dest; on any failure, Ctrl-C included, it deletes the temporary file.
            pooch.retrieve(
                entry.url,
                known_hash=f"sha256:{entry.sha256}",
                fname=dest.name,
                path=dest.parent,
                downloader=fetcher,
            )
    except requests.RequestException as error:  # before OSError: it is one
        raise BookgenError(_download_failed(entry, dest, _reason(error, timeout))) from error
    except ValueError as error:
        if fetcher.sha256 is None:  # raised before the download finished: not the checksum
            raise BookgenError(_download_failed(entry, dest, str(error))) from error
        raise BookgenError(_mismatch_message(entry, fetcher.sha256, dest)) from error
    except OSError as error:
        reason = error.strerror or str(error)
        raise BookgenError(f"cannot write a book into {dest.parent} ({reason})") from error
    return dest


# resolve_name's `download` flag shadows the function inside it.
_download = download


class _Fetcher:
    """Pooch's HTTP downloader, plus what pooch leaves out.

    Called by pooch with the temporary file, before pooch checks the hash and renames the file
    into place. Keeps the digest of what arrived, for the error message; gives the file the usual
    permissions (temporary files are private); and flushes it to disk, so that the rename can
    never expose a short book after a power cut.
    """

    def __init__(self, progress: Progress | None, timeout: float) -> None:
        import pooch

        self.http = pooch.HTTPDownloader(
            progressbar=False if progress is None else _ProgressHook(progress),
            chunk_size=_CHUNK_BYTES,
            timeout=timeout,
            headers={"User-Agent": _USER_AGENT},
        )
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, pooch_instance: Any) -> None:
        import pooch

        self.http(url, output_file, pooch_instance)
        self.sha256 = pooch.file_hash(output_file)
        os.chmod(output_file, 0o644)
        with open(output_file, "r+b") as written:
            os.fsync(written.fileno())


class _ProgressHook:
    """Pooch's progress-bar interface (`total`, `update`, `reset`, `close`) calling a `Progress`.

    Pooch sets `total` (0 when the server sends no length), calls `update(chunk size)` once per
    chunk, then `reset()`, `update(total)` and `close()` at the end. It counts whole chunks (the
    last one may be short; a compressed transfer may count more than the total), so the count is
    capped at the total and only rises are reported: the callback sees a growing count that ends
    at (total, total). Without a length the count is right to within one chunk.
    """

    def __init__(self, callback: Progress) -> None:
        self.callback = callback
        self.total = 0
        self.count = 0
        self.reported = 0

    def update(self, size: int) -> None:
        self.count += size
        done = min(self.count, self.total) if self.total else self.count
        if done > self.reported:
            self.reported = done
            self.callback(done, self.total or None)

    def reset(self) -> None:
        self.count = 0

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Keep pooch's "Downloading data from ..." lines off stderr; the CLI shows its own progress."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reason(error: requests.RequestException, timeout: float) -> str:
    """A short reason from requests' nested exceptions (requests wraps urllib3 wraps socket)."""
    import requests

    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    root: BaseException = error
    while (cause := root.__cause__ or root.__context__) is not None:
        root = cause
    if isinstance(root, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"the connection broke off mid-download: {root}"
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    return str(root) or type(root).__name__


def _download_failed(entry: CatalogEntry, dest: Path, reason: str) -> str:
    return (
        f"could not download {entry.name} from {entry.url} ({reason}); "
        f"download it yourself and save it as {dest}, "
        f"or set {CORPUS_PATH_VARIABLE} to a folder that has {entry.filename}"
    )


def _mismatch_message(entry: CatalogEntry, actual: str, dest: Path) -> str:
    return (
        f"the download of {entry.name} from {entry.url} has sha256 {actual}, "
        f"expected {entry.sha256} (the file may have changed upstream); "
        f"download a trusted copy yourself and save it as {dest}, "
        f"or set {CORPUS_PATH_VARIABLE} to a folder that has {entry.filename}"
    )
