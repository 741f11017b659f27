"""`bookgen bench`: every figure measured, the baseline beside it, bad options refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bookgen.bench import BenchSettings, flops_per_training_token
from bookgen.cli import app
from bookgen.errors import BookgenError

runner = CliRunner()
TINY = [
    "--hidden-size",
    "16",
    "--layers",
    "1",
    "--batch-size",
    "2",
    "--bptt",
    "4",
    "--seconds",
    "0.05",
]


def test_bench_json_holds_every_figure_and_its_baseline():
    result = runner.invoke(app, ["bench", "--json", *TINY, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in (
        "train_tokens_per_s", "baseline_train_tokens_per_s", "sample_tokens_per_s",
        "baseline_sample_tokens_per_s", "peak_gflops", "training_gflops",
    ):  # fmt: skip
        assert figures[key] > 0, key
    assert figures["precision"] in ("fp32", "bf16")
    picked = figures[f"train_tokens_per_s_{figures['precision']}"]
    assert figures["train_tokens_per_s"] == picked
    assert figures["train_speedup"] == round(picked / figures["baseline_train_tokens_per_s"], 3)
    assert 0 < figures["utilization"] < 1
    assert figures["settings"]["hidden_size"] == 16 and figures["device"] == "cpu"


def test_bench_table_names_the_machine_and_the_choice():
    result = runner.invoke(app, ["bench", *TINY, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "stock PyTorch" in result.stdout and "--precision auto picks" in result.stdout
    assert "sampling tok/s, batch 1" in result.stdout


def test_bad_bench_options_are_refused():
    # typer checks the choices, naming them; BenchSettings checks the rest, and the choices
    # again for Python callers.
    result = runner.invoke(app, ["bench", "--level", "bytes"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'bytes' is not one of 'char', 'word'" in result.output
    with pytest.raises(BookgenError, match="--level must be char or word, not 'bytes'"):
        BenchSettings(level="bytes")
    result = runner.invoke(app, ["bench", "--layers", "0"])
    assert result.exit_code == 2 and "error: --layers must be at least 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flops_per_token_count_gates_and_output():
    # LSTM, 1 layer, H 2, V 65: 4 gates x 2 x H x (in + H) = 64, output 2 x H x V = 260; x 3.
    assert flops_per_training_token(BenchSettings(hidden_size=2, layers=1)) == 3 * (64 + 260)
    gru = BenchSettings(hidden_size=2, layers=2, cell="gru")
    assert flops_per_training_token(gru) == 3 * (2 * 48 + 260)
