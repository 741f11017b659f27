"""`bookgen bench`: every figure measured, the baseline beside it, bad options refused."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bookgen import bench
from bookgen.bench import BenchSettings, flops_per_training_token, peak_figures
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
    assert 0 < figures["utilization"] <= 1
    assert figures["peak_gflops"] >= figures["matmul_gflops"] > 0
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


def test_utilization_is_training_over_the_peak_and_never_above_one():
    # 1,000 tok/s x 1 MFLOP a token = 1 GFLOP/s of training.
    below = peak_figures(1000.0, 1e6, matmul_gflops=4.0)
    assert below == {
        "matmul_gflops": 4.0,
        "peak_gflops": 4.0,
        "peak_from": "matrix products",
        "training_gflops": 1.0,
        "utilization": 0.25,
    }
    # Products that measure less than training did were not the peak: training is.
    above = peak_figures(1000.0, 1e6, matmul_gflops=0.5)
    assert (above["peak_gflops"], above["peak_from"], above["utilization"]) == (1.0, "training", 1)
    assert above["matmul_gflops"] == 0.5  # the products' own figure is kept


class FakeDevice:
    """A step timer that says every call of anything takes 1/`calls_per_s` s, on a device whose
    matrix products are `product_size` square."""

    def __init__(self, monkeypatch, calls_per_s: float, product_size: int) -> None:
        self.calls_per_s = calls_per_s
        monkeypatch.setattr(bench, "time_training", self.time_training)
        monkeypatch.setattr(bench, "CPU_PEAK_SIZE", product_size)

    def time_training(self, device, probe, precision, tokens):
        probe(precision)  # one real call: it tells bench how much work a call does
        return self.calls_per_s * tokens


@pytest.mark.parametrize("product_size, peak_from", [(2, "training"), (64, "matrix products")])
def test_bench_figures_on_a_fake_device_rate(monkeypatch, product_size, peak_from):
    FakeDevice(monkeypatch, calls_per_s=10.0, product_size=product_size)
    result = runner.invoke(app, ["bench", "--json", *TINY, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    settings = BenchSettings(hidden_size=16, layers=1, batch_size=2, bptt=4, seconds=0.05)
    tokens_per_s = 10.0 * 2 * 4  # every trainer: 10 steps/s of B 2 x T 4
    assert figures["train_tokens_per_s"] == figures["baseline_train_tokens_per_s"] == tokens_per_s
    assert figures["train_speedup"] == 1.0
    matmul = 10.0 * 2 * product_size**3 / 1e9  # one product a call on the CPU
    reached = tokens_per_s * flops_per_training_token(settings) / 1e9
    assert figures["matmul_gflops"] == round(matmul, 1)
    assert figures["training_gflops"] == float(f"{reached:.3g}")
    assert figures["peak_from"] == peak_from
    assert figures["utilization"] == float(f"{reached / max(reached, matmul):.3g}") <= 1


def test_the_peak_is_taken_in_the_arithmetic_training_runs_in(monkeypatch):
    # On a GPU, cuDNN runs an fp32 LSTM in TF32 (torch's default), so fp32 products are timed in
    # TF32 too, and the setting is put back; bf16, and a CPU, leave it alone. The setting is a
    # global flag: it can be read and set without a GPU.
    matmul, cuda = torch.backends.cuda.matmul, torch.device("cuda")
    before = torch.get_float32_matmul_precision()
    monkeypatch.setattr(bench, "cudnn_rnn_runs_tf32", lambda: True)
    with bench.training_arithmetic(cuda, "fp32"):
        # The old flag and the new agree (cuBLAS refuses to run where they do not).
        assert (torch.get_float32_matmul_precision(), matmul.fp32_precision) == ("high", "tf32")
    assert torch.get_float32_matmul_precision() == before
    assert matmul.fp32_precision != "tf32"
    for device, precision in ((cuda, "bf16"), (torch.device("cpu"), "fp32")):
        with bench.training_arithmetic(device, precision):
            assert torch.get_float32_matmul_precision() == before
    monkeypatch.setattr(bench, "cudnn_rnn_runs_tf32", lambda: False)  # TF32 turned off
    with bench.training_arithmetic(cuda, "fp32"):
        assert torch.get_float32_matmul_precision() == before
