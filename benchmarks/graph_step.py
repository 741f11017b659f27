"""Experiment for issue 25: does capturing bookgen's training step in a CUDA graph pay?

The step has no host sync (step.py), so the host only launches kernels; at 2 x 512, B 64, T 128
on an H200 a step is ~100 short kernels, and launching them may cost as much as running them.
A CUDA graph launches them all at once. This times, on one fixed window without resets (the
common case), the eager sync-free step against replaying it captured, each for the same number
of steps, and checks that one replay computes what one eager step does (loss and weights).

It is an experiment, not bookgen's code path: it tells whether the trainer should capture its
step (windows of one shape, the learning rate a device tensor, a graph per shape of window)
before anyone builds that. benchmarks/gpu.py runs it; alone:

    python benchmarks/graph_step.py            # CUDA only; exits 0 with a message otherwise
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def captured_step_speed(
    device: torch.device,
    layers: int = 2,
    hidden: int = 512,
    batch: int = 64,
    bptt: int = 128,
    precision: str = "bf16",
    steps: int = 200,
) -> dict:
    """Tokens/s of the eager step and of its CUDA-graph replay, and whether they agree."""
    from bookgen.context import RunContext
    from bookgen.model import ModelConfig, RecurrentLM
    from bookgen.settings import TrainConfig
    from bookgen.step import forward_backward, make_optimizer, train_step, update
    from bookgen.streams import Window

    class GraphContext(RunContext):
        def autocast(self):  # torch's CUDA-graph notes: autocast's cast cache off in a capture
            if self.precision == "bf16":
                return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
            return super().autocast()

    context = GraphContext(device, precision)
    config = ModelConfig(vocab_size=65, layers=layers, hidden_size=hidden, dropout=0.0)
    torch.manual_seed(0)
    eager_model = RecurrentLM(config).to(device)
    graph_model = copy.deepcopy(eager_model)
    graph_model.flatten_parameters()
    train = TrainConfig(steps=1)
    eager_opt, graph_opt = make_optimizer(eager_model, train), make_optimizer(graph_model, train)
    for group in graph_opt.param_groups:  # the fused AdamW keeps its step counts on the device
        group["capturable"] = True  # torch refuses a capture of step() without the flag
    tokens = torch.randint(0, 65, (bptt + 1, batch), device=device)
    flags = torch.zeros(bptt, batch, dtype=torch.bool)  # no resets: the host knows
    window = Window(tokens[:-1].contiguous(), tokens[1:].contiguous(), flags, ~flags, 0)
    eager_state = eager_model.init_state(batch, device)
    static_state = graph_model.init_state(batch, device)

    def graph_body() -> torch.Tensor:
        loss, after = forward_backward(graph_model, window, static_state, context)
        applied = update(graph_model, graph_opt, loss, 1.0)
        for held, new in zip(static_state, after, strict=True):
            held.copy_(torch.where(applied, new.detach(), held))
        return loss

    # Warm-up on a side stream (torch.cuda.graphs' rule), the gradients kept allocated so that
    # the capture's backward writes into the same buffers; the eager copy takes the same steps.
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "capturable=True ... running without graph capture"
        for _ in range(3):
            graph_opt.zero_grad(set_to_none=False)
            graph_body()
    torch.cuda.current_stream(device).wait_stream(side)
    for _ in range(3):
        _, eager_state, _ = train_step(eager_model, eager_opt, window, eager_state, context, 1.0)
    graph = torch.cuda.CUDAGraph()
    graph_opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        static_loss = graph_body()

    # One more step each: the replay must compute what the eager step does.
    graph.replay()
    loss_e, eager_state, _ = train_step(eager_model, eager_opt, window, eager_state, context, 1.0)
    torch.cuda.synchronize(device)
    same_loss = float(static_loss) == float(loss_e)
    weight_gap = max(
        float((a - b).abs().max())
        for a, b in zip(eager_model.parameters(), graph_model.parameters(), strict=True)
    )

    def timed(run) -> float:
        torch.cuda.synchronize(device)
        begin = time.perf_counter()
        for _ in range(steps):
            run()
        torch.cuda.synchronize(device)
        return steps * batch * bptt / (time.perf_counter() - begin)

    state = [eager_state]

    def eager() -> None:
        _, state[0], _ = train_step(eager_model, eager_opt, window, state[0], context, 1.0)

    eager_rate, graph_rate = timed(eager), timed(graph.replay)
    return {
        "shape": f"{layers} x {hidden}, B {batch}, T {bptt}, {precision}",
        "eager_tokens_per_s": round(eager_rate),
        "graph_tokens_per_s": round(graph_rate),
        "graph_over_eager": round(graph_rate / eager_rate, 3),
        "replay_loss_equals_eager": same_loss,
        "largest_weight_gap_after_a_replay": weight_gap,
    }


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU here: a CUDA graph needs one, skipping")
        return 0
    device = torch.device("cuda")
    for shape in ((2, 512, 64, 128), (3, 1024, 128, 256)):
        print(captured_step_speed(device, *shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
