"""Books known by name: `bookgen train shakespeare` resolves "shakespeare" to a local text file.

A name is looked up, in order, in the repository's `corpora/` folder (`<name>.txt`), in the
folders on `BOOKGEN_CORPUS_PATH`, and finally downloaded once from the URL in
`corpora/catalog.json` into `corpora/<name>.txt`. Downloads are checked against the catalog's
SHA-256 and written atomically, so a failed or interrupted download never leaves a half-written
book behind to be trained on later.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from bookgen.errors import BookgenError

CATALOG_PATH = Path(__file__).resolve().parent.parent / "corpora" / "catalog.json"
CORPUS_PATH_VARIABLE = "BOOKGEN_CORPUS_PATH"

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


def default_corpora_dir() -> Path:
    """The repository's `corpora/` folder, where downloaded books are kept."""
    return CATALOG_PATH.parent


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """Read the catalog, keyed by name, in file order."""
    path = CATALOG_PATH if path is None else Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BookgenError(f"cannot read the book catalog {path}: {error.strerror}") from error
    except ValueError as error:
        raise BookgenError(f"the book catalog {path} is not valid JSON: {error}") from error
    if not isinstance(raw, list):
        raise BookgenError(f"the book catalog {path} must be a JSON list of books")
    catalog: dict[str, CatalogEntry] = {}
    for index, item in enumerate(raw):
        entry = _parse_entry(item, f"{path}, entry {index}")
        if entry.name in catalog:
            raise BookgenError(f"{path}: the name {entry.name!r} appears twice")
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
    corpora_dir: Path | None = None,
    search_path: Sequence[Path] | None = None,
    download: bool = True,
    progress: Progress | None = None,
) -> Path:
    """The local text file for book `name`, downloading it into `corpora_dir` if need be."""
    if not _NAME.fullmatch(name):
        # Also keeps a name from steering the download outside corpora_dir ("../x").
        raise BookgenError(f"{name!r} is not a book name (lowercase a-z, 0-9, - or _)")
    catalog = load_catalog() if catalog is None else catalog
    corpora_dir = default_corpora_dir() if corpora_dir is None else Path(corpora_dir)
    entry = catalog.get(name)
    local = corpora_dir / f"{name}.txt"
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
    """Fetch `entry` to `dest`, checking its SHA-256; `dest` appears whole or not at all."""
    dest = Path(dest)
    temp = _open_temp(dest)
    try:
        with temp:
            digest = _stream(entry, temp, dest, progress, timeout)
            _check_digest(entry, digest, dest)
            _commit(temp, dest)
    except BaseException:
        # Also on Ctrl-C: never leave a stray partial download next to the books.
        Path(temp.name).unlink(missing_ok=True)
        raise
    return dest


# resolve_name's `download` flag shadows the function inside it.
_download = download


def _open_temp(dest: Path) -> IO[bytes]:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # In dest's folder so that os.replace is a rename within one file system (atomic).
        return tempfile.NamedTemporaryFile(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False
        )
    except OSError as error:
        reason = error.strerror or str(error)
        raise BookgenError(f"cannot write a book into {dest.parent} ({reason})") from error


def _commit(temp: IO[bytes], dest: Path) -> None:
    """Rename the finished download to `dest`, after it is on disk, so `dest` is never short."""
    try:
        temp.flush()
        os.fsync(temp.fileno())
        temp.close()
        # NamedTemporaryFile makes files private (0600); a public-domain book need not be.
        os.chmod(temp.name, 0o644)
        os.replace(temp.name, dest)
    except OSError as error:
        reason = error.strerror or str(error)
        raise BookgenError(f"cannot save the download as {dest} ({reason})") from error


def _stream(
    entry: CatalogEntry, out: IO[bytes], dest: Path, progress: Progress | None, timeout: float
) -> str:
    """Copy the response body into `out`; returns its SHA-256 hex digest."""
    digest = hashlib.sha256()
    done = 0
    request = urllib.request.Request(entry.url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response)
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise BookgenError(_download_failed(entry, dest, _reason(error, timeout))) from error
    # http.client returns a short body without complaint when the connection drops early.
    if total is not None and done < total:
        reason = f"connection closed after {done} of {total} bytes"
        raise BookgenError(_download_failed(entry, dest, reason))
    return digest.hexdigest()


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _download_failed(entry: CatalogEntry, dest: Path, reason: str) -> str:
    return (
        f"could not download {entry.name} from {entry.url} ({reason}); "
        f"download it yourself and save it as {dest}, "
        f"or set {CORPUS_PATH_VARIABLE} to a folder that has {entry.filename}"
    )


def _check_digest(entry: CatalogEntry, actual: str, dest: Path) -> None:
    if actual != entry.sha256:
        raise BookgenError(
            f"the download of {entry.name} from {entry.url} has sha256 {actual}, "
            f"expected {entry.sha256} (the file may have changed upstream); "
            f"download a trusted copy yourself and save it as {dest}, "
            f"or set {CORPUS_PATH_VARIABLE} to a folder that has {entry.filename}"
        )
