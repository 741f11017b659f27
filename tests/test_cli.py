from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bookgen
from bookgen.cli import app
from bookgen.events import TrainResult

runner = CliRunner()


def run(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def test_train_then_sample_from_the_cli(tiny_book: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --lr 0.03: at the default rate 30 steps are all warm-up and leave the model so near
    # uniform that every temperature draws the same text, and --temperature could not be seen.
    result = run(
        "train",
        tiny_book,
        "--steps",
        "30",
        "--lr",
        "0.03",
        "--hidden",
        "32",
        "--batch-size",
        "4",
        "--bptt",
        "16",
        "--precision",
        "fp32",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "checkpoints" / "tiny" / "checkpoint.json").exists()

    # Without --checkpoint, the newest checkpoint under ./checkpoints is used. The CLI writes the
    # seed, then exactly what the library draws with the same settings, then a newline; a
    # temperature other than the default shows that --temperature reaches the sampler.
    def sample(random_seed: int, temperature: float) -> str:
        args = ("--length", "50", "--temperature", temperature, "--random-seed", random_seed)
        result = run("sample", "--seed", "It was", *args)
        assert result.exit_code == 0, result.output
        return result.stdout

    writer = bookgen.load(tmp_path / "checkpoints" / "tiny")
    expected = "".join(writer.generate("It was", 50, temperature=1.3, random_seed=3))
    assert len(expected) == 50  # a character model: 50 tokens are 50 characters
    written = sample(3, 1.3)
    assert written == "It was" + expected + "\n"
    assert sample(4, 1.3) != written  # another random seed, other draws
    assert sample(3, 0.5) != written  # another temperature, another text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "temperature must be 0 or more"),
        (["--temperature", "inf"], "temperature must be 0 or more and finite, not inf"),
        (["--temperature", "nan"], "temperature must be 0 or more and finite, not nan"),
        (["--top-p", "0"], "top-p must be in (0, 1]"),
        (["--top-k", "-1"], "top-k must be 0"),
        (["--length", "-5"], "length must be 0 or more, not -5"),
    ],
)
def test_bad_sampling_values_exit_2_with_one_line(trained: Path, args, message):
    result = run("sample", "--checkpoint", trained, "--seed", "It", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_input_files_exit_2(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n\n")
    cases = [
        ([tmp_path / "missing.txt"], "no such file"),
        ([empty], "empty"),
        ([tmp_path / "no-books"], "no .txt files"),
    ]
    (tmp_path / "no-books").mkdir()
    (tmp_path / "x.bin").write_bytes(bytes(range(256)) * 20)
    cases.append(([tmp_path / "x.bin"], "binary"))
    for paths, message in cases:
        result = run("train", *paths, "--steps", "1", "--out", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert message in result.stderr
        assert "Traceback" not in result.output
        assert result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_a_value_outside_its_choices_is_refused_before_anything_runs(tmp_path: Path):
    # typer checks the Enum (the library's own check says the same to Python callers:
    # "--cell must be lstm or gru", in test_trainer), naming what is allowed.
    (tmp_path / "ok.txt").write_text("Some text to train on. " * 40)
    for option, value, allowed in [
        ("--cell", "transformer", "'lstm', 'gru'"),
        ("--level", "bytes", "'char', 'word'"),
        ("--device", "tpu", "'auto', 'cpu', 'cuda'"),
        ("--precision", "fp16", "'auto', 'bf16', 'fp32'"),
    ]:
        args = [tmp_path / "ok.txt", "--steps", "1", "--out", tmp_path / "out", option, value]
        result = run("train", *args, env={"COLUMNS": "200"})  # the message on one line
        assert result.exit_code == 2, result.output
        assert f"'{value}' is not one of {allowed}" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_the_old_integer_seed_of_train_says_its_new_name(tmp_path: Path):
    (tmp_path / "ok.txt").write_text("Some text to train on. " * 40)
    # With a book, and without one: the hint comes before typer's "missing argument".
    for args in ([tmp_path / "ok.txt", "--steps", "1", "--out", tmp_path / "out"], []):
        result = run("train", *args, "--seed", "5")
        assert result.exit_code == 2
        assert result.stderr.startswith("error: train's --seed is now --random-seed")
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert "--seed" not in run("train", "--help", env={"COLUMNS": "200"}).stdout


def test_options_carry_the_settings_names_and_only_those_given_reach_the_library(
    tmp_path: Path, monkeypatch
):
    import bookgen.api

    calls = []

    def fake_train(paths, out, **kwargs):
        calls.append(
            {k: v for k, v in kwargs.items() if k not in ("on_event", "download_progress")}
        )
        return TrainResult(out=tmp_path, steps=0, best_val_loss=None)

    monkeypatch.setattr(bookgen.api, "train", fake_train)
    old = ["--hidden", "32", "--embed", "16", "--lr", "0.03", "--cell", "gru", "--quiet"]
    new = ["--hidden-size", "32", "--embed-size", "16", "--learning-rate", "0.03", "--cell", "gru"]
    for spelling in (old, new + ["--quiet"]):
        result = run("train", "book.txt", *spelling)
        assert result.exit_code == 0, result.output
    # The names are the fields' (ModelConfig, TrainConfig); options not given are left out, so
    # --resume keeps the saved run's values and sizing for --minutes keeps only what was given.
    given = {"hidden_size": 32, "embed_size": 16, "learning_rate": 0.03, "cell": "gru"}
    assert calls == [{"resume": False, "force": False, **given}] * 2
    run("train", "book.txt", "--resume", "--steps", "5", "--lowercase", "--embeddings", "e.txt")
    assert calls[-1] == {
        "resume": True, "force": False, "steps": 5, "lowercase": True, "embeddings": "e.txt",
    }  # fmt: skip


def test_sample_without_any_checkpoint(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("sample", "--seed", "x")
    assert result.exit_code == 2
    assert "no checkpoint found" in result.stderr


def test_corpus_table_and_dump(tmp_path: Path):
    book = tmp_path / "book.txt"
    book.write_bytes(
        b"*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\n"
        b"\x93Hello,\x94 she said.\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
    )
    dump = tmp_path / "clean.txt"
    result = run("corpus", book, "--dump", dump)
    assert result.exit_code == 0, result.output
    assert "windows-1252" in result.stdout and "stripped" in result.stdout
    assert dump.read_text(encoding="utf-8") == "“Hello,” she said.\n"


def test_installed_command_runs_and_teaches():
    wide = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "bookgen.cli", "train", "--help"],
        capture_output=True, text=True, env=wide,
    )  # fmt: skip
    assert result.returncode == 0
    assert "parallel streams" in result.stdout
    # The defaults written into the help survive rich's markup, which would eat "[default: ..]".
    assert "Dropout, one mask per sequence. [default: 0.25]" in result.stdout
    # The settings' names, with the short spellings users know beside them.
    for spellings in ("--hidden-size,--hidden", "--embed-size,--embed", "--learning-rate,--lr"):
        assert spellings in result.stdout
    assert "Hidden state size per layer. [default: 512]" in result.stdout
    assert "a character model is sized for it on this machine" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "bookgen.cli", "sample", "--help"],
        capture_output=True, text=True, env=wide,
    )  # fmt: skip
    assert "Checkpoint folder [default: newest under checkpoints/]" in result.stdout
