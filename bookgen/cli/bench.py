"""`bookgen bench`: how fast bookgen trains and samples on this machine."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bookgen.cli.console import err
from bookgen.cli.options import (
    BatchSizeOption,
    BpttOption,
    CellOption,
    DeviceOption,
    HiddenSizeOption,
    JsonOption,
    LayersOption,
    LevelOption,
    field_option,
    given,
)
from bookgen.settings import BenchSettings as Bench


def bench(
    context: typer.Context,
    hidden_size: HiddenSizeOption = Bench.hidden_size,
    layers: LayersOption = Bench.layers,
    batch_size: BatchSizeOption = Bench.batch_size,
    bptt: BpttOption = Bench.bptt,
    level: LevelOption = Bench.level,
    cell: CellOption = Bench.cell,
    device: DeviceOption = Bench.device,
    seconds: Annotated[float, field_option(Bench, "seconds")] = Bench.seconds,
    as_json: JsonOption = False,
) -> None:
    """Measure how fast bookgen trains and samples on this machine, in about a minute.

    Times bookgen's training step in fp32 and bf16 autocast (and says which one --precision auto
    would pick), the stock PyTorch recipe (one multi-layer fp32 nn.LSTM) on the same model as
    the baseline, sampling at batch 1 (bookgen and the stock one-call-per-token loop), and the
    machine's matrix-product peak with the share of it training reaches. Random tokens: speed
    does not depend on the book (--level sets the vocabulary measured: 65 characters, or
    training's default number of words). Run it on a quiet machine; other work beside it skews
    it.
    """
    from bookgen.bench import run_bench

    settings = Bench(**given(context, Bench))
    if as_json:
        print(json.dumps(run_bench(settings)))
        return
    with err.status("measuring") as status:
        result = run_bench(settings, lambda stage: status.update(f"measuring {stage}"))
    _show(settings, result)


def _show(settings: Bench, result: dict) -> None:
    s = settings
    model = f"{s.layers} x {s.hidden_size} {s.cell.upper()}, {s.level} level"
    table = Table(
        title=f"bookgen bench: {model}, B {s.batch_size}, T {s.bptt}, {result['machine']}"
    )
    for column in ("", "bookgen", "stock PyTorch", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    r, stock = result, result["baseline_train_tokens_per_s"]
    rows = [
        ("training tok/s, fp32", r["train_tokens_per_s_fp32"], stock),
        ("training tok/s, bf16", r["train_tokens_per_s_bf16"], stock),
        ("sampling tok/s, batch 1", r["sample_tokens_per_s"], r["baseline_sample_tokens_per_s"]),
    ]
    for name, ours, theirs in rows:
        if ours is None:
            table.add_row(name, "does not run here", f"{theirs:,.0f}", "")
        else:
            table.add_row(name, f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}x")
    Console().print(table)
    Console().print(
        f"--precision auto picks {result['precision']}. Matrix-product peak "
        f"{result['peak_gflops']:,.0f} GFLOP/s in {result['precision']}; training reaches "
        f"{result['training_gflops']:,.0f} ({result['utilization']:.0%})."
    )
