"""bookgen's cache folder, and the small JSON records kept in it.

    <cache>/precision.json   measured training speeds and precision choices (context.py)
    <cache>/tokens/<key>/    the token cache (tokencache.py)

Everything in it can be rebuilt: a missing or damaged record is measured again, and a cache that
cannot be written only costs the next run that time. Tests give each run its own folder through
BOOKGEN_CACHE_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from bookgen.errors import BookgenError
from bookgen.files import atomic_write

CACHE_VARIABLE = "BOOKGEN_CACHE_DIR"


def cache_dir() -> Path:
    """bookgen's cache folder: $BOOKGEN_CACHE_DIR, or the user's cache folder."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    import platformdirs

    return Path(platformdirs.user_cache_dir("bookgen", appauthor=False))


def read_record(name: str) -> dict:
    """The JSON object kept in the cache as `name`: {} when missing or damaged."""
    try:
        data = json.loads((cache_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def add_to_record(name: str, key: str, entry: dict) -> None:
    """Set `key` in the record `name` to `entry`, stamped with the time it was measured."""
    data = read_record(name)
    data[key] = {**entry, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(BookgenError):  # an unwritable cache only costs the next measure
        atomic_write(cache_dir() / name, json.dumps(data, indent=1).encode("utf-8"))
