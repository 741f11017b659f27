from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bookgen
from bookgen.checkpoint import (
    FORMAT_VERSION,
    MANIFEST,
    load_checkpoint,
    read_manifest,
    read_metrics,
)
from bookgen.corpus import read_corpus
from bookgen.errors import BookgenError
from bookgen.settings import TrainConfig
from bookgen.trainer import Trainer
from tests.conftest import TINY_MODEL


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def test_checkpoint_holds_the_trained_model_and_everything_needed_to_sample(
    tiny_book: Path, tmp_path: Path
):
    trained = tmp_path / "model"
    options = dict(TINY_MODEL, embed_size=16)  # untied: the output layer is saved on its own
    model_options = {k: options.pop(k) for k in ("hidden_size", "embed_size", "dropout")}
    config = TrainConfig(steps=40, eval_every=20, **options)
    trainer = Trainer(read_corpus([tiny_book]), model_options, config, trained)
    trainer.run()
    files = manifest(trained)["files"]
    names = sorted(p.name for p in trained.iterdir())
    # Only what the manifest names (plus metrics and the copy guard's index of the book, for
    # the default --max-copy): no temporary or stale files left behind.
    guard = "copy-guard-40.safetensors"
    assert names == sorted({*files.values(), "checkpoint.json", "metrics.jsonl", guard})
    loaded = load_checkpoint(trained, which="model")
    # The very weights the trainer ended with, and the tokenizer it trained with.
    expected = trainer.model.state_dict()
    assert set(loaded.model.state_dict()) == set(expected)
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    tokens = torch.tensor(loaded.tokenizer.encode("It was the")).view(-1, 1)
    assert loaded.tokenizer.encode("It was the") == trainer.data.tokenizer.encode("It was the")
    trainer.model.eval()
    a, _ = loaded.model.eval()(tokens, loaded.model.init_state(1))
    b, _ = trainer.model(tokens, trainer.model.init_state(1))
    assert torch.equal(a, b)
    records = read_metrics(trained)
    assert [r["step"] for r in records] == [20, 40]
    assert set(records[0]) == {
        "step",
        "tokens",
        "epoch",
        "train_loss",
        "val_loss",
        "val_bits_per_char",
        "lr",
        "elapsed_s",
        "tokens_per_s",
    }


class Boom:
    def __reduce__(self):
        return (Path("/tmp/bookgen-pwned").touch, ())


def test_a_crafted_pickle_is_refused_and_never_run(trained: Path):
    target = trained / manifest(trained)["files"]["best_model"]
    target.write_bytes(pickle.dumps({"weights": Boom()}))
    Path("/tmp/bookgen-pwned").unlink(missing_ok=True)
    with pytest.raises(BookgenError, match="damaged or not a safetensors file"):
        load_checkpoint(trained)
    assert not Path("/tmp/bookgen-pwned").exists()


def test_truncated_weights_missing_files_and_future_versions(trained: Path):
    weights = trained / manifest(trained)["files"]["best_model"]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(BookgenError, match="damaged or not a safetensors file"):
        load_checkpoint(trained)
    weights.unlink()
    with pytest.raises(BookgenError, match="missing from the checkpoint"):
        load_checkpoint(trained)
    m = manifest(trained)
    m["format_version"] = FORMAT_VERSION + 1
    (trained / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BookgenError, match="written by a newer bookgen"):
        load_checkpoint(trained)


def test_not_a_checkpoint(tmp_path: Path):
    with pytest.raises(BookgenError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(BookgenError, match="not a bookgen checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.pop("progress"),
        lambda m: m.pop("files"),
        lambda m: m["files"].pop("train_state"),
        lambda m: m["files"].update(model="../../etc/passwd"),
        lambda m: m["progress"].update(surprise=1),
    ],
)
def test_a_manifest_with_missing_or_odd_fields_is_one_clear_error(trained: Path, tiny_book, damage):
    m = manifest(trained)
    damage(m)
    (trained / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BookgenError, match="damaged"):
        bookgen.train(tiny_book, trained, resume=True)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", ".hidden", "sub\\model.safetensors"])
def test_the_files_a_manifest_names_stay_in_its_folder(trained: Path, name: str):
    m = manifest(trained)
    m["files"]["model"] = name
    (trained / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(
        BookgenError, match=r"damaged checkpoint manifest \(no valid files\.model\)"
    ):
        load_checkpoint(trained)


def test_a_format_2_checkpoint_resumes_with_its_seed(tiny_book: Path, tmp_path: Path):
    """Format 2 called training's random seed `seed`: such a run is read as format 3 and resumes
    with its own random seed, exactly as it would have gone on."""
    run = dict(TINY_MODEL, eval_every=10, dropout=0.1, random_seed=5)
    control, old = tmp_path / "control", tmp_path / "old"
    for folder in (control, old):
        bookgen.train(tiny_book, folder, steps=10, **run)
    bookgen.train(tiny_book, control, resume=True, steps=20)
    m = manifest(old)
    m["format_version"] = 2
    m["train_config"]["seed"] = m["train_config"].pop("random_seed")
    (old / MANIFEST).write_text(json.dumps(m))
    assert read_manifest(old)["train_config"]["random_seed"] == 5
    bookgen.train(tiny_book, old, resume=True, steps=20)
    exact = lambda folder: [  # noqa: E731  (the timings differ, what was computed must not)
        {k: r[k] for k in ("step", "tokens", "epoch", "train_loss", "val_loss", "lr")}
        for r in read_metrics(folder)
    ]
    assert exact(old) == exact(control)  # with the default seed, dropout would differ
    m["format_version"] = 1
    (old / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BookgenError, match="reads 2 to 3"):
        load_checkpoint(old)


def test_a_manifest_that_disagrees_with_its_weights_is_refused_in_one_line(
    trained: Path, tiny_book: Path
):
    """The weights' header (names and shapes) is checked against the manifest's model config
    before a model is built: loading for `sample`, and resuming."""
    m = manifest(trained)
    m["model_config"]["hidden_size"] = 48  # the weights hold 32
    (trained / MANIFEST).write_text(json.dumps(m))
    said = "layers.0.weight_ih_l0 is 128 x 32 in the file, 192 x 32 by the manifest"
    for load in (
        lambda: load_checkpoint(trained),
        lambda: bookgen.train(tiny_book, trained, resume=True, steps=50),
    ):
        with pytest.raises(BookgenError) as error:
            load()
        message = str(error.value)
        assert "do not match checkpoint.json's model_config" in message, message
        assert said in message and "\n" not in message, message
    # Layers the file does not hold, a billion of them: refused at the first one missing, before
    # anything of the manifest's size is worked out, let alone built.
    m["model_config"].update(hidden_size=32, layers=10**9)
    (trained / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(
        BookgenError, match=r"layers\.1\.weight_ih_l0 is absent in the file, 128 x 32 by"
    ):
        load_checkpoint(trained)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the memory limit is set with resource")
def test_a_manifest_asking_for_a_huge_model_is_refused_before_allocating(trained: Path):
    """hidden_size 10**9 would allocate 512 GB for the first layer alone. `bookgen sample` must
    refuse it at once, in one line and exit 2. The process runs with 8 GB of address space, so
    that a regression dies of a MemoryError (a traceback) instead of taking the machine's memory."""
    import resource

    m = manifest(trained)
    m["model_config"]["hidden_size"] = 10**9
    (trained / MANIFEST).write_text(json.dumps(m))

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    command = [sys.executable, "-m", "bookgen", "sample", "--checkpoint", str(trained)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, preexec_fn=limit_memory
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "4000000000 x 32 by the manifest" in line, line
