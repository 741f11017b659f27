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
