"""The run's context: the device and the precision, decided once and handed to every stage.

Training, `eval`, `sample` and `chat` all run in a `RunContext`; none of them decides the device
or the precision on its own.

Precision is measured, not guessed from a capability flag. bf16 autocast is 1.5x faster than
fp32 on one 2-core CPU (AMD Zen 5) and 1.6x *slower* on another that has the same bf16
instructions (an Intel Xeon with AVX-512-bf16 but no AMX); on a third (an AMD EPYC whose virtual
machine hides AVX-512) oneDNN has no bf16 LSTM kernel at all. So `--precision auto` times a few
real training steps of the actual model in each precision (`choose_precision`) and keeps the
faster. The choice is cached per machine, torch version, model shape and batch, so the next run
pays nothing, and it is saved in the checkpoint: `eval`, `sample`, `chat` and `--resume` use the
saved choice and never measure again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bookgen.cache import add_to_record, read_record
from bookgen.errors import BookgenError
from bookgen.settings import Device, Precision

PRECISIONS = ("fp32", "bf16")
CACHE_RECORD = "precision.json"  # in the cache folder (cache.py): measured choices and speeds
# bf16 is kept only when it measures this much faster than fp32: below that, the noise of a
# two-second probe on a busy laptop is as large as the gain, and fp32 is the more exact of the two.
BF16_MARGIN = 1.10
PROBE_ROUNDS = 2  # candidates are timed in turn, twice, and each keeps its best round
PROBE_SECONDS = 0.4  # timed per candidate and round, after one warm-up step
PROBE_MIN_STEPS = 2


@dataclass(frozen=True)
class RunContext:
    """Where and how tensors are computed: the device, and fp32 or bf16 autocast."""

    device: torch.device
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BookgenError(f"precision must be fp32 or bf16, not {self.precision!r}")

    def autocast(self):
        """The context forward passes run in: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait for queued GPU work, so a clock read after it measures the work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device's queue.

    A copy to a GPU from ordinary (pageable) memory waits until the GPU has run everything queued
    before it; from pinned memory, non-blocking, it is queued like a kernel. (torch's pinned
    memory comes from a caching allocator that keeps the buffer until the copy has run.)
    """
    if device.type == "cpu" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when a GPU is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    Device.parse(name, "--device")  # the one check of the allowed values
    if name == "cuda" and not torch.cuda.is_available():
        raise BookgenError("--device cuda: no CUDA GPU is available here (use --device cpu)")
    return torch.device(name)


def inference_context(device: torch.device, precision: str, cell: str) -> RunContext:
    """The context for `eval`, `sample` and `chat`: the device asked for, the saved precision.

    A checkpoint trained in bf16 on one machine may be read on another where bf16 does not run
    at all (no oneDNN bf16 LSTM kernel): it is then read in fp32, with a warning, never refused.
    """
    if precision == "bf16" and not bf16_runs(device.type, cell):
        import warnings

        from bookgen.errors import BookgenWarning

        warnings.warn(
            f"the model was trained in bf16, which does not run for {cell.upper()} on this "
            f"{device.type}; reading it in fp32",
            BookgenWarning,
            stacklevel=2,
        )
        precision = "fp32"
    return RunContext(device, precision)


@functools.cache
def bf16_runs(device_type: str, cell: str) -> bool:
    """Whether a bf16-autocast forward and backward of `cell` runs here at all."""
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return False
    rnn_class = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    # Its random start must not move the run's random stream: a run would otherwise differ
    # depending on whether this was asked before in the same process.
    with torch.random.fork_rng(devices=[]):
        rnn = rnn_class(4, 4).to(device_type)
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out, _ = rnn(torch.zeros(2, 1, 4, device=device_type))
        out.float().sum().backward()
    except RuntimeError:  # e.g. "could not create a primitive descriptor" (no oneDNN kernel)
        return False
    return True


# --- choosing the precision by measuring -----------------------------------------------------


@dataclass(frozen=True)
class PrecisionChoice:
    """Which precision a run uses, how that was decided, and the speeds measured for it."""

    precision: str
    # "asked" (--precision), "measured", "cached" (measured by an earlier run), "saved" (by the
    # run being resumed), or "bf16 does not run here" (nothing to measure)
    how: str
    tokens_per_s: dict[str, float | None] = field(default_factory=dict)  # None: does not run

    def describe(self) -> str:
        """e.g. 'fp32 (measured: 15.0k tok/s; bf16 9.3k)' for the start line."""
        if not self.tokens_per_s:
            return f"{self.precision} ({self.how})"

        def speed(precision: str) -> str:
            value = self.tokens_per_s.get(precision)
            return "does not run here" if value is None else f"{value / 1000:.1f}k"

        others = [p for p in self.tokens_per_s if p != self.precision]
        tail = "".join(f"; {p} {speed(p)}" for p in others)
        return f"{self.precision} ({self.how}: {speed(self.precision)} tok/s{tail})"

    def to_dict(self) -> dict:
        return {"precision": self.precision, "how": self.how, "tokens_per_s": self.tokens_per_s}

    @classmethod
    def from_dict(cls, data: dict) -> PrecisionChoice:
        return cls(data["precision"], data["how"], dict(data.get("tokens_per_s") or {}))


# A probe runs one training step of the real model in the given precision (on a copy: the run
# itself is untouched) and raises RuntimeError where that precision does not run.
Probe = Callable[[str], None]


def choose_precision(
    requested: str,
    context_device: torch.device,
    cell: str,
    probe: Probe,
    tokens_per_step: int,
    cache_key: str,
) -> PrecisionChoice:
    """fp32 or bf16: as asked, or (auto) whichever trains this model faster on this machine."""
    requested = Precision.parse(requested, "--precision")  # the one check of the allowed values
    if requested == "fp32":
        return PrecisionChoice("fp32", "asked")
    if requested == "bf16":
        if not bf16_runs(context_device.type, cell):
            raise BookgenError(
                f"--precision bf16: bf16 autocast does not run for {cell.upper()} on this "
                f"{context_device.type} (no bf16 kernel); use --precision fp32 or auto"
            )
        return PrecisionChoice("bf16", "asked")
    if not bf16_runs(context_device.type, cell):
        # Nothing to choose between: no probe, no cost (the start line says why).
        return PrecisionChoice("fp32", "bf16 does not run here")
    cached = read_record(CACHE_RECORD).get(cache_key)
    if cached is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return PrecisionChoice(cached["precision"], "cached", cached["tokens_per_s"])
    speeds = measure_speeds(context_device, cell, probe, tokens_per_step)
    bf16 = speeds.get("bf16")
    faster = bf16 is not None and bf16 >= BF16_MARGIN * speeds["fp32"]
    choice = PrecisionChoice("bf16" if faster else "fp32", "measured", speeds)
    add_to_record(CACHE_RECORD, cache_key, choice.to_dict())
    return choice


def measure_speeds(
    device: torch.device, cell: str, probe: Probe, tokens_per_step: int
) -> dict[str, float | None]:
    """Training tokens per second in each precision that runs here (None where it does not).

    The candidates are timed in turn, `PROBE_ROUNDS` times, and each keeps its best round: a
    burst of other work on the machine then slows one round, not one candidate.
    """
    candidates = ["fp32"] + (["bf16"] if bf16_runs(device.type, cell) else [])
    best: dict[str, float | None] = {p: None for p in PRECISIONS}
    for _ in range(PROBE_ROUNDS):
        for precision in list(candidates):
            rate = time_training(device, probe, precision, tokens_per_step)
            if rate is None:
                candidates.remove(precision)
            elif best[precision] is None or rate > best[precision]:
                best[precision] = rate
    if best["fp32"] is None:
        raise BookgenError("a training step fails in fp32 on this machine")
    return best


def time_training(device: torch.device, probe: Probe, precision: str, tokens: int) -> float | None:
    """Tokens per second of `probe`'s training step in `precision` (None: it does not run)."""
    context = RunContext(device, precision)
    try:
        probe(precision)  # warm-up: first calls allocate and pick kernels
        context.synchronize()
        steps, begin = 0, time.perf_counter()
        while steps < PROBE_MIN_STEPS or time.perf_counter() - begin < PROBE_SECONDS:
            probe(precision)
            steps += 1
        context.synchronize()
        return steps * tokens / (time.perf_counter() - begin)
    except RuntimeError:
        return None


def measured_speed(
    device: torch.device, probe: Probe, precision: str, tokens_per_step: int, cache_key: str
) -> float:
    """Training tokens/s of `probe` in `precision`, measured once per machine and cached.

    For what the precision choice does not time itself (fp32 where bf16 does not run, or a
    precision that was asked for): the model sizing a --minutes budget needs it.
    """
    cached = read_record(CACHE_RECORD).get(cache_key)
    if cached is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return float(cached["tokens_per_s"][precision])
    rate = time_training(device, probe, precision, tokens_per_step)
    if rate is None:
        raise BookgenError(f"a training step fails in {precision} on this machine")
    entry = PrecisionChoice(precision, "measured", {precision: rate})
    add_to_record(CACHE_RECORD, cache_key, entry.to_dict())
    return rate


def precision_cache_key(device: torch.device, shape: dict, batch_size: int, bptt: int) -> str:
    """What a measured choice depends on: the processor, torch, the model's shape, B x T."""
    parts = [
        machine_name(device),
        f"torch {torch.__version__}",
        f"threads {torch.get_num_threads()}",
        json.dumps(shape, sort_keys=True),
        f"B {batch_size} T {bptt}",
    ]
    return " | ".join(parts)


def machine_name(device: torch.device) -> str:
    """The processor or GPU, as exactly as can be told: two EPYCs may share a model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    ident = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
    flags = hashlib.sha256(info.get("flags", "").encode()).hexdigest()[:8]
    return f"{name} ({ident}, flags {flags})"


def processor_name() -> str:
    """The CPU's model name, for reports and benchmarks."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():  # the first processor is enough
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info
