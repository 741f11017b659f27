"""Benchmark: issue 25's GPU figures in one run (under 8 minutes on an H200); prints them and
writes JSON (benchmarks/results/gpu.json, or --json).

1. `bookgen bench` at the issue's shapes, 2 x 512 B 64 T 128 and 3 x 1024 B 128 T 256: bookgen's
   training step in fp32 and bf16 against the stock recipe, sampling at batch 1 against the
   stock loop, the matrix-product peak and the share of it training reaches (`run_bench`);
2. which precision cuDNN's LSTM really runs in under bf16 autocast: the dtypes `_cudnn_rnn`
   receives (a dispatch mode, below autocast) and the GPU kernels of one step (torch.profiler);
3. a real `bookgen train BOOK --minutes 3 --device cuda` (a subprocess, as a user runs it, from
   an empty cache as a first run is): its tokens/s against the bench's at the shape and precision
   it chose (issue 25's target: at least 70%);
4. whether any of it printed cuDNN's "not part of single contiguous chunk of memory" warning;
5. sampling at batch 1 at both shapes (issue 25, target 3: at least 10x the stock loop): the
   CUDA-graph sampler, the same device path op by op, the fast sampler with its draw on the host
   (what `bench` measured before), the stock loop; whether the graph was captured and writes the
   text the ops write; the GPU kernels per token of the device path;
6. the training step captured in a CUDA graph against the eager step (benchmarks/graph_step.py):
   whether capturing it is worth building into the trainer.

Each part that fails is recorded with its error and the others still run. Without CUDA it says
so and exits 0; `--tiny --device cpu` runs the same plumbing on tiny shapes on the CPU (no
profiler part), to check the script itself.

    python benchmarks/gpu.py
    python benchmarks/gpu.py --tiny --device cpu --json /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's bookgen, whatever the environment installed
BOOKS = [
    ROOT / "shared" / "corpora" / "tinyshakespeare.txt",
    ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt",
]
CHUNK_WARNING = "not part of single contiguous chunk"
TARGET = 0.70  # a real run's tokens/s over the bench's at its shape (issue 25, target 1)
SAMPLE_TARGET = 10.0  # the graph sampler's tokens/s over the stock loop's (issue 25, target 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--minutes", type=float, default=None, help="the real run's budget (3)")
    parser.add_argument("--book", type=Path, default=None, help="default: tinyshakespeare.txt")
    parser.add_argument("--no-train", action="store_true", help="skip the real run")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: checks the script")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.1 if args.tiny else 3.0
    if args.book is None:
        args.book = next((book for book in BOOKS if book.exists()), BOOKS[-1])
    return args


def bench_shapes(tiny: bool, device: str) -> list:
    from bookgen.settings import BenchSettings

    if tiny:
        return [BenchSettings(hidden_size=16, layers=1, batch_size=2, bptt=4, device=device,
                              seconds=0.05, rounds=1)]  # fmt: skip
    return [
        BenchSettings(hidden_size=512, layers=2, batch_size=64, bptt=128, device=device,
                      seconds=2.0, rounds=2),
        BenchSettings(hidden_size=1024, layers=3, batch_size=128, bptt=256, device=device,
                      seconds=2.0, rounds=2),
    ]  # fmt: skip


def attempt(name: str, work: Callable[[], dict]) -> dict:
    """`work()`'s figures, or its error: one part failing must not lose the others."""
    print(f"--- {name}", flush=True)
    begin = time.perf_counter()
    try:
        result = work()
    except Exception as error:  # noqa: BLE001 - recorded, and the run goes on
        result = {"error": f"{type(error).__name__}: {error}"}
    result["wall_s"] = round(time.perf_counter() - begin, 1)
    print(json.dumps(result, indent=1, default=str)[:3000], flush=True)
    return result


# --- 1. bench --------------------------------------------------------------------------------


def bench(settings) -> dict:
    from bookgen.bench import run_bench

    return run_bench(settings, lambda stage: print(f"  measuring {stage}", flush=True))


# --- 2. which precision cuDNN's LSTM runs in under bf16 autocast ------------------------------


def lstm_step(device: torch.device, layers: int = 2, hidden: int = 512, batch: int = 64):
    """One forward and backward of bookgen's model under bf16 autocast, as training runs it."""
    from bookgen.model import ModelConfig, RecurrentLM

    model = RecurrentLM(ModelConfig(vocab_size=65, layers=layers, hidden_size=hidden)).to(device)
    tokens = torch.randint(0, 65, (128, batch), device=device)
    state = model.init_state(batch, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits, _ = model(tokens, state)
        logits.float().sum().backward()

    return step


def rnn_op_dtypes(step: Callable[[], None]) -> dict[str, list[str]]:
    """The dtypes of the tensors each RNN op receives, seen below autocast (its casts done)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    seen: dict[str, set[str]] = {}

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if "rnn" in name.lower() or "lstm" in name.lower():
                leaves = tree_leaves((args, kwargs or {}))
                dtypes = {str(t.dtype) for t in leaves if isinstance(t, torch.Tensor)}
                seen.setdefault(name, set()).update(dtypes)
            return func(*args, **(kwargs or {}))

    with Dtypes():
        step()
    return {name: sorted(dtypes) for name, dtypes in seen.items()}


def kernel_precision(name: str) -> str:
    """What a GPU kernel's name says of its arithmetic ("?" where it says nothing)."""
    lower = name.lower()
    if "bf16" in lower or "bfloat16" in lower:
        return "bf16"
    if "half" in lower or "f16" in lower or "fp16" in lower:
        return "fp16"
    if "tf32" in lower:
        return "tf32"
    if "float" in lower or "f32" in lower:
        return "fp32"
    return "?"


def gpu_kernels(step: Callable[[], None], device: torch.device, top: int = 20) -> list[dict]:
    """The GPU kernels of one step, most time first, each with the precision its name says."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type != DeviceType.CUDA:
            continue
        entry = kernels.setdefault(event.name, [0, 0.0])
        entry[0] += 1
        entry[1] += event.device_time_total if hasattr(event, "device_time_total") else 0.0
    ranked = sorted(kernels.items(), key=lambda item: -item[1][1])[:top]
    return [
        {"kernel": name[:200], "calls": calls, "us": round(us, 1),
         "precision": kernel_precision(name)}
        for name, (calls, us) in ranked
    ]  # fmt: skip


def cudnn_precision(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"skipped": "needs CUDA"}
    step = lstm_step(device)
    step()  # warm-up: cuDNN picks its kernels
    torch.cuda.synchronize(device)
    result: dict = {"cudnn_version": torch.backends.cudnn.version()}
    result.update(attempt("  dtypes below autocast", lambda: {"ops": rnn_op_dtypes(step)}))
    result.update(attempt("  kernels", lambda: {"kernels": gpu_kernels(step, device)}))
    rnn_inputs = [d for name, d in result.get("ops", {}).items() if "_cudnn_rnn" in name]
    if rnn_inputs:
        result["cudnn_rnn_runs_in"] = sorted({t for dtypes in rnn_inputs for t in dtypes})
    lstm_kernels = [k for k in result.get("kernels", []) if "rnn" in k["kernel"].lower()
                    or "lstm" in k["kernel"].lower()]  # fmt: skip
    result["lstm_kernel_precisions"] = sorted({k["precision"] for k in lstm_kernels})
    return result


# --- 3. a real run against the bench ----------------------------------------------------------


def real_run(book: Path, minutes: float, device: str, folder: Path) -> dict:
    """`bookgen train BOOK --minutes M` as a user runs it, and the bench at the shape it chose."""
    from bookgen.checkpoint import read_manifest, read_metrics
    from bookgen.settings import BenchSettings

    if not book.exists():
        return {"skipped": f"{book} not found (--book)"}
    command = [sys.executable, "-m", "bookgen", "train", str(book), "--out",
               str(folder / "model"), "--minutes", f"{minutes:g}", "--device", device]  # fmt: skip
    env = {**os.environ, "BOOKGEN_CACHE_DIR": str(folder / "cache"), "PYTHONPATH": str(ROOT)}
    begin = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=minutes * 60 + 600)  # fmt: skip
    result: dict = {
        "command": " ".join(["bookgen", *command[3:]]),
        "exit_code": done.returncode,
        "wall_s_including_startup": round(time.perf_counter() - begin, 1),
        "chunk_warning_printed": CHUNK_WARNING in done.stderr + done.stdout,
    }
    if done.returncode != 0:
        return {**result, "stderr_tail": done.stderr[-3000:]}
    manifest, metrics = read_manifest(folder / "model"), read_metrics(folder / "model")
    model, train = manifest["model_config"], manifest["train_config"]
    precision = manifest["precision"]["precision"]
    first, last = metrics[0], metrics[-1]
    steady = (last["tokens"] - first["tokens"]) / max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    shape = BenchSettings(hidden_size=model["hidden_size"], layers=model["layers"],
                          batch_size=train["batch_size"], bptt=train["bptt"], cell=model["cell"],
                          device=device, seconds=2.0, rounds=1)  # fmt: skip
    print(f"  the run chose {shape.layers} x {shape.hidden_size}, B {shape.batch_size}, "
          f"T {shape.bptt}, {precision}: benching that shape", flush=True)  # fmt: skip
    figures = bench(shape)
    bench_rate = figures[f"train_tokens_per_s_{precision}"]
    return {
        **result,
        "shape": {"layers": shape.layers, "hidden_size": shape.hidden_size,
                  "batch_size": shape.batch_size, "bptt": shape.bptt, "precision": precision},
        "precision_choice": manifest["precision"],
        "steps": last["step"],
        "best_val_loss": min(m["val_loss"] for m in metrics if m.get("val_loss") is not None),
        "run_tokens_per_s": last["tokens_per_s"],  # over the whole run, startup included
        "run_tokens_per_s_between_first_and_last_record": round(steady, 1),
        "bench_tokens_per_s_at_run_shape": bench_rate,
        "share_of_bench": round(last["tokens_per_s"] / bench_rate, 3) if bench_rate else None,
        "share_of_bench_steady": round(steady / bench_rate, 3) if bench_rate else None,
        "target_share": TARGET,
        "bench_at_run_shape": figures,
    }  # fmt: skip


# --- 5. sampling at batch 1 -------------------------------------------------------------------

SAMPLERS = {  # name: (the draw on the device, CUDA graphs)
    "graph": (True, None),
    "device ops": (True, False),
    "fast sampler, host draw": (False, False),
}


def sample_writer(model, settings, device: torch.device, on_device: bool, graphs: bool | None):
    """A writer of `model` the way `bench` builds one, on the path asked for."""
    from bookgen.context import RunContext
    from bookgen.sampler import TextGenerator
    from bookgen.tokenizer import CharTokenizer

    symbols = [chr(0x4E00 + i) for i in range(settings.vocab_size - 1)]
    writer = TextGenerator(model, CharTokenizer(symbols), RunContext(device))
    writer.draw_on_device, writer.capture_graphs = on_device, graphs
    return writer


def sample_text(writer, tokens: int, random_seed: int) -> str:
    seed = writer.tokenizer.decode([1, 2, 3, 4])
    return "".join(writer.generate(seed, tokens, temperature=0.8, random_seed=random_seed))


def sample_work(writer, tokens: int) -> Callable[[], int]:
    """One call of `tokens` tokens, each call from another random seed (as `bench` writes)."""
    calls = [0]

    def work() -> int:
        calls[0] += 1
        sample_text(writer, tokens, calls[0])
        return tokens

    return work


def kernels_per_token(writer, device: torch.device) -> float | None:
    """GPU kernels (and copies) a token of the device path launches: a block run op by op,
    profiled."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from bookgen.settings import SamplingSettings

    if device.type != "cuda":
        return None
    runner = writer.device_runner(SamplingSettings(temperature=0.8))
    with torch.inference_mode():  # the runner's buffers are inference tensors
        runner.units()  # warm-up
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner.units()
            torch.cuda.synchronize(device)
    kernels = sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)
    return round(kernels / runner.block, 1)


def sampling(settings, device: torch.device, tokens: int = 200) -> dict:
    """Tokens/s at batch 1 of each sampler (`tokens` a call, as `bench` writes), best of rounds."""
    from bookgen.bench import _best, _rate, bookgen_model, stock_sampler
    from bookgen.settings import SamplingSettings

    model = bookgen_model(settings, device).eval()
    writers = {name: sample_writer(model, settings, device, *how) for name, how in SAMPLERS.items()}
    works = {name: sample_work(writer, tokens) for name, writer in writers.items()}
    works["stock loop"] = stock_sampler(settings, device, tokens)
    timers = {name: (lambda w=w: _rate(w, settings.seconds, device)) for name, w in works.items()}
    rates = {name: round(rate, 1) for name, rate in _best(timers, settings.rounds).items()}
    # The graph has been captured by now (the timing wrote far past CAPTURE_AFTER tokens).
    graph, ops = writers["graph"], writers["device ops"]
    same = [sample_text(graph, 600, seed) == sample_text(ops, 600, seed) for seed in (1, 2)]
    runner = writers["graph"].device_runner(SamplingSettings(temperature=0.8))
    shape = f"{settings.layers} x {settings.hidden_size} {settings.cell}, V {settings.vocab_size}"
    return {
        "shape": shape,
        "tokens_per_s": rates,
        "graph_over_stock": round(rates["graph"] / rates["stock loop"], 2),
        "graph_over_fast_sampler": round(rates["graph"] / rates["fast sampler, host draw"], 2),
        "target_over_stock": SAMPLE_TARGET,
        "graph_captured": runner.graph is not None,
        "capture_error": runner.capture_error,
        "fused_cells": fused_cells(device),
        "graph_text_equals_ops_text": all(same),
        "kernels_per_token_device_path": kernels_per_token(writers["device ops"], device),
    }


def fused_cells(device: torch.device) -> bool:
    from bookgen.device_sampler import fused_cells_work

    return fused_cells_work(device)


# --- all of it -------------------------------------------------------------------------------


def graph_step(shape: tuple[int, int, int, int]) -> dict:
    from benchmarks.graph_step import captured_step_speed

    return captured_step_speed(torch.device("cuda"), *shape)


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    report: dict = {
        "benchmark": "issue 25: bench at the issue's shapes, cuDNN's precision under bf16 "
        "autocast, a real --minutes run against the bench, sampling at batch 1",
        "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    torch.set_warn_always(True)  # cuDNN's warning is printed once per process otherwise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report["bench"] = [
            attempt(f"bench {s.layers} x {s.hidden_size}, B {s.batch_size}, T {s.bptt}",
                    lambda s=s: bench(s))
            for s in bench_shapes(args.tiny, device.type)
        ]  # fmt: skip
        report["cudnn_lstm_under_bf16_autocast"] = attempt(
            "cuDNN's LSTM under bf16 autocast", lambda: cudnn_precision(device)
        )
        report["captured_step"] = [
            attempt(f"the step in a CUDA graph, {shape}", lambda shape=shape: graph_step(shape))
            for shape in ((2, 512, 64, 128), (3, 1024, 128, 256))
        ] if device.type == "cuda" else [{"skipped": "a CUDA graph needs CUDA"}]  # fmt: skip
        report["sampling"] = [
            attempt(f"sampling at batch 1, {s.layers} x {s.hidden_size}",
                    lambda s=s: sampling(s, device))
            for s in bench_shapes(args.tiny, device.type)
        ]  # fmt: skip
    torch.set_warn_always(False)
    report["chunk_warning_in_bench"] = any(CHUNK_WARNING in str(w.message) for w in caught)
    if args.no_train:
        report["real_run"] = {"skipped": "--no-train"}
    else:
        with tempfile.TemporaryDirectory() as folder:
            report["real_run"] = attempt(
                f"bookgen train {args.book.name} --minutes {args.minutes:g}",
                lambda: real_run(args.book, args.minutes, device.type, Path(folder)),
            )
    return report


def write_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def summary(report: dict) -> list[str]:
    """The lines worth reading first."""
    lines = [f"{report['machine']}, torch {report['torch']}"]
    for figures in report["bench"]:
        if "error" in figures:
            lines.append(f"bench: {figures['error']}")
            continue
        s, bf16 = figures["settings"], figures["train_tokens_per_s_bf16"]
        lines.append(
            f"bench {s['layers']} x {s['hidden_size']} B {s['batch_size']} T {s['bptt']}: "
            f"fp32 {figures['train_tokens_per_s_fp32']:,.0f}, bf16 "
            f"{'does not run' if bf16 is None else f'{bf16:,.0f}'}, stock "
            f"{figures['baseline_train_tokens_per_s']:,.0f} tok/s; sampling "
            f"{figures['sample_tokens_per_s']:,.0f} vs stock "
            f"{figures['baseline_sample_tokens_per_s']:,.0f}; utilization "
            f"{figures['utilization']} of {figures['peak_gflops']:,.0f} GFLOP/s "
            f"({figures['peak_from']})"
        )
    for figures in report["sampling"]:
        if "error" in figures:
            lines.append(f"sampling: {figures['error']}")
            continue
        rates = figures["tokens_per_s"]
        lines.append(
            f"sampling {figures['shape']}: graph {rates['graph']:,.0f} tok/s "
            f"({figures['graph_over_stock']}x the stock loop's {rates['stock loop']:,.0f}; "
            f"target {SAMPLE_TARGET:g}x), ops {rates['device ops']:,.0f}, fast sampler "
            f"{rates['fast sampler, host draw']:,.0f}; captured {figures['graph_captured']}"
            f"{'' if figures['capture_error'] is None else ' (' + figures['capture_error'] + ')'}, "
            f"same text {figures['graph_text_equals_ops_text']}, "
            f"{figures['kernels_per_token_device_path']} kernels/token"
        )
    cudnn = report["cudnn_lstm_under_bf16_autocast"]
    lines.append(
        f"cuDNN LSTM under bf16 autocast: op dtypes {cudnn.get('cudnn_rnn_runs_in')}, "
        f"kernels {cudnn.get('lstm_kernel_precisions')} {cudnn.get('error', '')}".rstrip()
    )
    for captured in report.get("captured_step", []):
        lines.append(f"step in a CUDA graph: {captured}")
    run = report["real_run"]
    if "share_of_bench" in run:
        lines.append(
            f"real run: {run['run_tokens_per_s']:,.0f} tok/s ({run['share_of_bench']:.0%} of the "
            f"bench's {run['bench_tokens_per_s_at_run_shape']:,.0f}; steady "
            f"{run['share_of_bench_steady']:.0%}; target {TARGET:.0%}), best val "
            f"{run['best_val_loss']:.4f}"
        )
    else:
        lines.append(f"real run: {run}")
    warned = report["chunk_warning_in_bench"] or run.get("chunk_warning_printed", False)
    lines.append(f"cuDNN 'contiguous chunk' warning printed: {warned}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: benchmarks/gpu.py measures a GPU, skipping "
              "(--tiny --device cpu checks the script on the CPU)")  # fmt: skip
        return 0
    device = torch.device(args.device)
    report = measure(args, device)
    write_report(report, args.json)
    print("\n".join(summary(report)))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
