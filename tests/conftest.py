"""Shared fixtures: tiny books and tiny models, so the whole suite runs in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bookgen

# Under pytest-xdist (`-n 2`), one thread per worker, for torch here and for the processes the
# tests start: two workers of two OpenMP threads each on two cores spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` (20 s to a minute here) run first, in pytest-randomly's order among
    themselves, the rest after them in its order. pytest-xdist hands each worker a first chunk
    of consecutive tests, then more as it finishes them: a long test drawn last could run alone
    at the end while the other worker waits; drawn first, the other worker fills the time."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable


SHARED_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"

TINY_BOOK = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
    "incredulity, it was the season of Light, it was the season of Darkness.\n\n"
) * 12

# A tiny model that trains in about a second.
TINY_MODEL = dict(
    hidden_size=32, batch_size=4, bptt=16, dropout=0.0, precision="fp32", device="cpu"
)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Measured precision choices are cached in a folder of the test session, never the user's."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOOKGEN_CACHE_DIR", str(folder))
        yield folder


def shared_corpus(relative: str) -> Path:
    path = SHARED_CORPORA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: real books live in ../shared/corpora, not in the repo")
    return path


@pytest.fixture
def tiny_book(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_BOOK, encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path: Path, tiny_book: Path) -> Path:
    """A checkpoint folder of a tiny model trained for 40 steps on the tiny book."""
    out = tmp_path / "model"
    bookgen.train(tiny_book, out, steps=40, eval_every=20, **TINY_MODEL)
    return out
