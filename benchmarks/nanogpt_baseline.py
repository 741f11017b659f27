"""Baseline: nanoGPT's own model trained on Tiny Shakespeare for the same wall-clock minutes.

nanoGPT is not part of bookgen and is not vendored: fetch it once and point this script at it,

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    python benchmarks/nanogpt_baseline.py --nanogpt /tmp/nanoGPT --minutes 1

It imports `GPT` and `GPTConfig` from that checkout's model.py and trains them as nanoGPT's
train.py does (random blocks of the first 90% of the characters, its `configure_optimizers`
AdamW, linear warm-up then cosine decay to a tenth), except that the decay follows the share of
the wall-clock budget used, as bookgen's does, so both get the same minutes. The size defaults to
a model tuned for short CPU budgets (4 layers x 192, block 64, batch 16: the best found for 10
minutes on two cores; nanoGPT's own shakespeare_char config, 6 x 384 with block 256, is far too
slow for a CPU). Evaluation is not counted in the budget (a favour to the baseline), and scores
every character of the last 10% twice: in consecutive blocks (what nanoGPT's estimate_loss
samples) and sliding (each character with a full block of context, half a block per step).
Prints the figures and writes JSON (--json, default benchmarks/results/nanogpt.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from datetime import date
from pathlib import Path

import torch
from torch.nn import functional as F

from bookgen.context import processor_name

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def load_nanogpt(checkout: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", checkout / "model.py")
    if spec is None or not (checkout / "model.py").exists():
        raise SystemExit(f"{checkout}/model.py not found: clone nanoGPT there first (see --help)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GPT, module.GPTConfig


@torch.no_grad()
def score(model, data: torch.Tensor, block: int, stride: int) -> float:
    """Mean nats per character over `data`, windows of `block` moved by `stride`; each character
    is scored once, in the first window whose scored part (its last `stride`) holds it."""
    model.eval()
    total, count = 0.0, 0
    begin = 0
    while begin + 1 < len(data):
        window = data[begin : begin + block + 1]
        inputs, targets = window[:-1][None], window[1:][None]
        logits, _ = model(inputs, targets)  # targets given: logits for every position
        nats = F.cross_entropy(logits[0], targets[0], reduction="none")
        first = 0 if begin == 0 else block - stride
        total += float(nats[first:].sum())
        count += nats[first:].numel()
        if begin + block + 1 >= len(data):
            break
        begin += stride
    model.train()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--embed", type=int, default=192)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/nanogpt.json")
    args = parser.parse_args()
    if not BOOK.exists():
        raise SystemExit(f"{BOOK} not found: this benchmark needs ../shared/corpora")
    GPT, GPTConfig = load_nanogpt(args.nanogpt)
    text = BOOK.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))  # nanoGPT's prepare.py split: the first 90% trains
    train, val = data[:split], data[split:]

    torch.manual_seed(args.seed)
    config = GPTConfig(
        block_size=args.block, vocab_size=len(chars), n_layer=args.layers, n_head=args.heads,
        n_embd=args.embed, dropout=args.dropout, bias=False,
    )  # fmt: skip
    model = GPT(config)
    optimizer = model.configure_optimizers(0.1, args.lr, (0.9, 0.99), "cpu")
    budget = args.minutes * 60
    begin, step = time.perf_counter(), 0
    while (used := (time.perf_counter() - begin) / budget) < 1.0:
        warm = min(1.0, (step + 1) / args.warmup)
        decay = 0.5 * (1 + math.cos(math.pi * used))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * (0.1 + 0.9 * decay)
        starts = torch.randint(len(train) - args.block - 1, (args.batch,))
        x = torch.stack([train[i : i + args.block] for i in starts])
        y = torch.stack([train[i + 1 : i + args.block + 1] for i in starts])
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
    seconds = time.perf_counter() - begin
    blocks = score(model, val, args.block, args.block)
    sliding = score(model, val, args.block, args.block // 2)
    report = {
        "benchmark": "nanoGPT (its model.py) on tinyshakespeare, same wall-clock budget",
        "command": f"python benchmarks/nanogpt_baseline.py --nanogpt NANOGPT --minutes "
        f"{args.minutes:g}",
        "date": date.today().isoformat(),
        "processor": processor_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k not in ("nanogpt", "json")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "train_tokens_per_s": round(step * args.batch * args.block / seconds, 1),
        "val_loss_blocks": round(blocks, 4),
        "val_loss_sliding": round(sliding, 4),
    }
    print(
        f"{report['processor']}: nanoGPT {args.layers} x {args.embed}, {step:,} steps, "
        f"{report['train_tokens_per_s']:,.0f} tok/s, val {blocks:.4f} nats/char "
        f"(sliding {sliding:.4f})"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
