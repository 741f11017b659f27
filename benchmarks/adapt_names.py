"""Benchmark: does a model adapted on a passage of the user's own write that passage's names?

A Shakespeare-like passage (below, 1,086 characters) has four invented names that Tiny
Shakespeare never has. The model (by default the lead's 10-minute Tiny Shakespeare model)
writes N samples unadapted and N adapted on the passage (`generate(adapt_on=)`, i.e.
`bookgen sample --adapt-on`), the same random seeds for both, from the same seed text; each
sample's invented names are counted (whole names, any case). With the default adapting settings
and, for the dial, larger learning rates; for each, what adapting costs the model elsewhere: its
loss on the last HELD_OUT characters of Tiny Shakespeare (held-out text for the ts10 model),
read statically with the adapted weights (a learning rate too large garbles the text). Writes
benchmarks/results/adapt-names-<processor>.json (or --json), with two samples of each to read.

    OMP_NUM_THREADS=1 python benchmarks/adapt_names.py --checkpoint /work/runs/ts10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

import bookgen
from bookgen.context import processor_name
from bookgen.sampler import adapt_settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"

HELD_OUT = 20_000  # characters at the end of Tiny Shakespeare (its model's validation text)
NAMES = ("ZORBALIND", "Quethrin", "Vellamorn", "Istrabel")

PASSAGE = """\
ZORBALIND:
Good Quethrin, hear me; I have ridden hard from Vellamorn,
And Istrabel is taken by the duke.

QUETHRIN:
Taken! O ZORBALIND, thou bring'st me heavy news.
Where lies she now? in Vellamorn, or in the tower?

ZORBALIND:
In Vellamorn, my lord, within the castle walls,
Where Istrabel did weep and call on Quethrin's name.

QUETHRIN:
Then to Vellamorn will I, though all the duke's men
Stand in my way. Istrabel shall not weep alone.
ZORBALIND, wilt thou ride with me?

ZORBALIND:
I will, good Quethrin, to the gates of Vellamorn
And through them, if the heavens give us leave.

ISTRABEL:
O Quethrin, Quethrin! wherefore com'st thou not?
The walls of Vellamorn are cold, and ZORBALIND
Hath promised me that thou wouldst come ere night.

QUETHRIN:
Istrabel, I come; ZORBALIND rides at my side.
Let Vellamorn tremble, and the duke look to himself.

ZORBALIND:
My lord, the night is dark upon the road to Vellamorn;
We shall be there by morning, and Istrabel set free.

QUETHRIN:
Speak not of morning, ZORBALIND; speak of Istrabel,
And of the duke, that in his pride hath taken her.
"""


def count_names(text: str) -> dict[str, int]:
    """Whole-word occurrences of each invented name, in any case ("Zorbalind", "ZORBALIND")."""
    return {name: len(re.findall(rf"\b{name}\b", text, flags=re.IGNORECASE)) for name in NAMES}


def write_samples(writer, passage, settings, args) -> tuple[list[str], float, float | None]:
    """`args.samples` samples (random seeds 0, 1, ...), adapted on `passage` unless None; the
    seconds taken; the held-out loss of the weights written with."""
    start = time.perf_counter()
    if passage is not None:
        writer = writer.adapted(passage, settings)
    samples = [
        "".join(writer.generate(args.seed, length=args.length, random_seed=index))
        for index in range(args.samples)
    ]
    seconds = time.perf_counter() - start
    return samples, seconds, held_out_nats(writer)


@torch.no_grad()
def held_out_nats(writer) -> float | None:
    """Nats per character of the model on Tiny Shakespeare's last HELD_OUT characters, read
    in one pass from a fresh state (None without the corpus)."""
    if not CORPUS.exists():
        return None
    ids = torch.tensor(writer.tokenizer.encode(CORPUS.read_text(encoding="utf-8")[-HELD_OUT:]))
    model = writer.model
    logits, _ = model(ids[:-1].view(-1, 1), model.init_state(1))
    return round(float(torch.nn.functional.cross_entropy(logits[:, 0].float(), ids[1:])), 4)


def summary(samples: list[str]) -> dict:
    counts = [count_names(sample) for sample in samples]
    return {
        "names_per_sample": [sum(count.values()) for count in counts],
        "names_total": {name: sum(count[name] for count in counts) for name in NAMES},
        "samples_with_a_name": sum(1 for count in counts if any(count.values())),
        "examples": samples[:2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="/work/runs/ts10")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--seed", default="", help="The text each sample starts from.")
    parser.add_argument(
        "--lrs", type=float, nargs="*", default=[1e-3, 2e-3, 5e-3, 1e-2],
        help="Learning rates tried besides the default (the dial).",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    if CORPUS.exists():  # invented: the book never has them
        book = count_names(CORPUS.read_text(encoding="utf-8"))
        assert not any(book.values()), book
    writer = bookgen.load(args.checkpoint)
    runs = {"unadapted": (None, None)}
    default = adapt_settings()
    runs[f"adapted (default: {default.adapt_rule} lr {default.adapt_lr:g})"] = (PASSAGE, default)
    for lr in args.lrs:
        runs[f"adapted (lr {lr:g})"] = (PASSAGE, adapt_settings(adapt_lr=lr))
    results = {}
    for label, (passage, settings) in runs.items():
        samples, seconds, held_out = write_samples(writer, passage, settings, args)
        results[label] = {
            **summary(samples),
            "held_out_nats_per_char": held_out,
            "seconds": round(seconds, 1),
        }
        print(
            f"{label:<36} samples with a name {results[label]['samples_with_a_name']:>2}"
            f"/{args.samples}, names {results[label]['names_total']}, held-out loss "
            f"{held_out} nats/char ({seconds:.0f} s)",
            flush=True,
        )
    report = {
        "processor": processor_name(),
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
        "torch": torch.__version__,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "checkpoint": args.checkpoint,
        "samples": args.samples,
        "length": args.length,
        "seed_text": args.seed,
        "passage_chars": len(PASSAGE),
        "names_in_passage": count_names(PASSAGE),
        "results": results,
    }
    name = f"adapt-names-{processor_name().lower().replace(' ', '-')}.json"
    path = args.json or ROOT / "benchmarks" / "results" / name
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
