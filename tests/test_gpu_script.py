"""benchmarks/gpu.py, the parts a CPU can check: it skips cleanly without CUDA, reads its
arguments, and reads a kernel's precision from its name. (`--tiny --device cpu` runs the whole
script on the CPU in a few minutes: too slow for the suite.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run")
def test_without_cuda_it_says_so_and_exits_0_writing_nothing(gpu, tmp_path, capsys):
    assert gpu.main(["--json", str(tmp_path / "gpu.json")]) == 0
    assert "no CUDA GPU here" in capsys.readouterr().out
    assert not (tmp_path / "gpu.json").exists()


def test_arguments_and_their_defaults(gpu, tmp_path):
    args = gpu.parse_args([])
    assert (args.device, args.minutes, args.tiny, args.no_train) == ("cuda", 3.0, False, False)
    assert args.book.name == "tinyshakespeare.txt"
    tiny = gpu.parse_args(["--tiny", "--device", "cpu", "--book", str(tmp_path / "b.txt")])
    assert (tiny.device, tiny.minutes, tiny.book) == ("cpu", 0.1, tmp_path / "b.txt")
    shapes = gpu.bench_shapes(False, "cuda")
    shapes = [(s.layers, s.hidden_size, s.batch_size, s.bptt) for s in shapes]
    assert shapes == [(2, 512, 64, 128), (3, 1024, 128, 256)]  # the shapes
    with pytest.raises(SystemExit):
        gpu.parse_args(["--device", "tpu"])


@pytest.mark.parametrize(
    "name, precision",
    [
        ("void RNN_blockPersist_fp_LSTM<__half, __half, float, 128>(...)", "fp16"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "bf16"),
        ("void LSTM_elementWise_fp<__nv_bfloat16, float>(...)", "bf16"),
        ("sm80_xmma_gemm_f32f32_tf32f32_f32_nn", "tf32"),
        ("void elemWiseRNNcell<float, float, float>(...)", "fp32"),
        ("void at::native::vectorized_elementwise_kernel<4>(...)", "?"),
    ],
)
def test_a_kernels_name_tells_its_precision(gpu, name, precision):
    assert gpu.kernel_precision(name) == precision


def test_the_sampling_figures_are_summed_up_in_one_line_each(gpu):
    figures = {
        "shape": "2 x 512 lstm, V 65",
        "tokens_per_s": {"graph": 40000.0, "device ops": 9000.0,
                         "fast sampler, host draw": 3453.0, "stock loop": 2170.0},
        "graph_over_stock": 18.43, "graph_captured": True, "capture_error": None,
        "graph_text_equals_ops_text": True, "kernels_per_token_device_path": 16.0,
    }  # fmt: skip
    failed = {**figures, "graph_captured": False, "capture_error": "RuntimeError: no"}
    report = {
        "machine": "NVIDIA H200", "torch": "2.13", "bench": [],
        "sampling": [figures, failed, {"error": "RuntimeError: out of memory"}],
        "cudnn_lstm_under_bf16_autocast": {}, "real_run": {"skipped": "--no-train"},
        "chunk_warning_in_bench": False,
    }  # fmt: skip
    lines = [line for line in gpu.summary(report) if line.startswith("sampling")]
    assert lines[0] == (
        "sampling 2 x 512 lstm, V 65: graph 40,000 tok/s (18.43x the stock loop's 2,170; "
        "target 10x), ops 9,000, fast sampler 3,453; captured True, same text True, "
        "16.0 kernels/token"
    )
    assert "captured False (RuntimeError: no)" in lines[1]
    assert lines[2] == "sampling: RuntimeError: out of memory"
