"""`bookgen report`: the numbers of a run as its checkpoint recorded them, and its loss curves."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import bookgen
from bookgen.checkpoint import load_checkpoint, read_manifest, read_metrics
from bookgen.errors import BookgenError
from bookgen.report import (
    load_report,
    report_renderables,
    terminal_curves,
    val_sparkline,
    write_png,
)
from tests.conftest import TINY_BOOK, TINY_MODEL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """conftest's `trained` run (40 steps, evaluated at 20 and 40), trained once for the module:
    the tests only read it (one edits a copy), so a busy machine trains it once, not ten times."""
    folder = tmp_path_factory.mktemp("report")
    book = folder / "tiny.txt"
    book.write_text(TINY_BOOK, encoding="utf-8")
    bookgen.train(book, folder / "model", steps=40, eval_every=20, **TINY_MODEL)
    return folder / "model"


def rendered(report) -> str:
    """The report as `bookgen report` prints it, as plain text."""
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    for renderable in report_renderables(report):
        console.print(renderable)
    return console.export_text()


def without_evaluations(trained: Path, folder: Path) -> Path:
    """A copy of `trained` as saved before its first evaluation (as by --checkpoint-every)."""
    folder = Path(shutil.copytree(trained, folder))
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["progress"].update(best_val_loss=None, best_step=None, last_eval_step=-1)
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    (folder / "metrics.jsonl").write_text("")
    return folder


def hide_modules(monkeypatch, name: str) -> None:
    """Make `import name` (and its submodules, even those already imported) fail."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, name, None)


# --- the numbers -----------------------------------------------------------------------------


def test_report_numbers_are_the_checkpoints(trained: Path):
    report = load_report(trained)
    manifest, metrics = read_manifest(trained), read_metrics(trained)
    progress = manifest["progress"]
    assert report.best_val_loss == progress["best_val_loss"] == min(r["val_loss"] for r in metrics)
    assert report.best_step == progress["best_step"]
    assert report.steps == progress["step"] == 40
    assert report.tokens_seen == progress["tokens_seen"]
    assert report.elapsed_s == progress["elapsed_s"]
    (best,) = [r for r in metrics if r["step"] == report.best_step]
    assert report.best_bits_per_char == best["val_bits_per_char"]
    assert report.evaluations == metrics and [r["step"] for r in metrics] == [20, 40]
    assert report.epochs == metrics[-1]["epoch"]  # the run ends with an evaluation
    assert report.parameters == load_checkpoint(trained).model.parameter_count()
    assert (report.cell, report.layers, report.hidden_size, report.tied) == ("lstm", 1, 32, True)
    assert (report.batch_size, report.bptt, report.learning_rate) == (4, 16, 5e-3)
    assert report.books == ["tiny"] and report.budget == "40 steps"
    assert report.precision == "fp32" and report.precision_note == "fp32 (asked)"


def test_printed_report_shows_the_settings_and_results(trained: Path):
    report = load_report(trained)
    text = rendered(report)
    characters = read_manifest(trained)["corpus"]["documents"][0]["chars"]
    for expected in (
        f"tiny ({characters:,} characters)",
        f"LSTM, 1 x 32, embedding 32 (tied), 29 characters, {report.parameters:,} parameters",
        "batch 4, bptt 16, learning rate 0.005, dropout 0",
        "40 steps",
        "fp32 (asked)",
        f"{report.tokens_seen:,}",
        f"{report.best_val_loss:.4f} nats/token at step 40",
        f"{report.best_bits_per_char:.4f} (at the best step)",
        "tiny: loss by step",
    ):
        assert expected in text


def test_a_run_with_no_evaluation_yet_reports_its_settings(trained: Path, tmp_path: Path):
    report = load_report(without_evaluations(trained, tmp_path / "early"))
    assert report.evaluations == [] and report.best_val_loss is None
    text = rendered(report)
    assert "batch 4, bptt 16" in text
    assert "no evaluation yet (step 40), so there is no curve to draw" in text
    assert "best validation loss │ no evaluation yet" in text
    assert terminal_curves(report).startswith("no evaluation yet")
    with pytest.raises(BookgenError, match="has no evaluation yet"):
        write_png(report, tmp_path / "curves.png")


@pytest.mark.parametrize(
    "name, message", [("missing", "no such checkpoint folder"), (".", "not a bookgen checkpoint")]
)
def test_a_folder_that_is_not_a_checkpoint_is_one_line(tmp_path: Path, name: str, message: str):
    with pytest.raises(BookgenError, match=message) as error:
        load_report(tmp_path / name)
    assert "\n" not in str(error.value)


# --- the curves ------------------------------------------------------------------------------


def test_terminal_curves_have_their_size_labels_and_legend(trained: Path):
    report = load_report(trained)
    plain = terminal_curves(report, width=70, height=16, color=False)
    lines = plain.splitlines()
    assert len(lines) == 16 and {len(line) for line in lines} == {70}
    for label in ("tiny: loss by step", "loss (nats/token)", "step", "train", "validation"):
        assert label in plain
    assert lines[-2].split() == ["0", "8", "16", "24", "32", "40"]  # steps, from 0 to the last
    assert "\x1b[" not in plain and "\x1b[" in terminal_curves(report, 70, 16)


def test_png_is_written(trained: Path, tmp_path: Path):
    from PIL import Image

    path = write_png(load_report(trained), tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.size == (800, 450)


def test_png_into_a_missing_folder_is_one_line(trained: Path, tmp_path: Path):
    with pytest.raises(BookgenError, match=r"the folder .*nowhere does not exist") as error:
        write_png(load_report(trained), tmp_path / "nowhere" / "curves.png")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "nowhere").exists()


def test_missing_plotting_libraries_say_how_to_install_them(trained: Path, monkeypatch, tmp_path):
    report = load_report(trained)
    hide_modules(monkeypatch, "matplotlib")
    with pytest.raises(BookgenError, match=r"needs matplotlib.*: pip install matplotlib$"):
        write_png(report, tmp_path / "curves.png")
    hide_modules(monkeypatch, "plotext")
    with pytest.raises(BookgenError, match=r"need plotext.*: pip install plotext$"):
        terminal_curves(report)


# --- the sparkline ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "losses, width, bars",
    [
        ([3, 2, 1], 24, "█▅▁"),  # 2 is halfway: the first value of the fifth band of eight
        (list(range(30)), 8, "▁▂▃▄▅▆▇█"),  # the last 8: 22..29, one band each
        ([2.5, 2.5], 24, "▄▄"),  # nothing to compare: the middle
        ([1.0, math.nan, 3.0], 24, "▁×█"),
        ([9.0, 1.0, 2.0], 2, "▁█"),  # 9 is out of the window, and of the range
        ([], 24, ""),
    ],
)
def test_val_sparkline(losses, width, bars):
    assert val_sparkline(losses, width) == bars


def test_val_sparkline_needs_a_width():
    with pytest.raises(ValueError, match="width must be at least 1"):
        val_sparkline([1.0], width=0)


# --- the command -----------------------------------------------------------------------------


def run_cli(*args):
    from bookgen.cli import app

    return CliRunner().invoke(app, ["report", *map(str, args)])


def test_report_command_prints_the_report_and_writes_the_png(trained: Path, tmp_path: Path):
    png = tmp_path / "curves.png"
    result = run_cli("--checkpoint", trained, "--png", png)
    assert result.exit_code == 0, result.output
    best = read_manifest(trained)["progress"]["best_val_loss"]
    assert f"{best:.4f} nats/token at step 40" in result.stdout
    assert "loss (nats/token)" in result.stdout
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"curves written to {png}" in result.stderr


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""  # nothing printed before the error


def test_report_command_on_no_checkpoint_is_one_line(tmp_path: Path):
    assert_one_line_error(
        run_cli("--checkpoint", tmp_path / "nothing"), "no such checkpoint folder"
    )


def test_report_command_png_into_a_missing_folder_is_one_line(trained: Path, tmp_path: Path):
    result = run_cli("--checkpoint", trained, "--png", tmp_path / "nowhere" / "curves.png")
    assert_one_line_error(result, "nowhere does not exist")
