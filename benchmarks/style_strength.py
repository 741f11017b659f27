"""Benchmark: how the style strength (styles.STYLE_STRENGTH) moves a styled model's samples onto
the book asked for.

For a styled checkpoint (benchmarks/styles.py trains one on three books), writes --samples samples
of --length characters per style at each strength, with weights neutral + strength * (style -
neutral) given as a tensor (used as given), and attributes each to the book whose character
5-gram model reads it in the fewest bits (benchmarks/styles.py's Attributor). Writes
benchmarks/results/styles-strength-<processor>.json (or --json).

    OMP_NUM_THREADS=1 python benchmarks/style_strength.py --checkpoint /tmp/bookgen-styles/both
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import bookgen
from bookgen.context import processor_name
from bookgen.corpus import read_document

sys.path.insert(0, str(Path(__file__).resolve().parent))
from styles import BOOKS, SHELF, Attributor, landing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--strengths", default="1,1.5,2")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    attributor = Attributor({b: read_document(SHELF / f"{b}.txt").text for b in BOOKS})
    writer = bookgen.load(args.checkpoint)
    names = [style.name for style in writer.styles]
    shares = torch.tensor([style.share for style in writer.styles])
    neutral = shares / shares.sum()
    report = {
        "benchmark": "samples landing on the book asked for, by style strength",
        "command": "python benchmarks/style_strength.py " + " ".join(sys.argv[1:]),
        "processor": processor_name(),
        "threads": torch.get_num_threads(),
        "neutral": neutral.tolist(),
        "runs": [],
    }
    for strength in map(float, args.strengths.split(",")):
        for index, name in enumerate(names):
            target = torch.nn.functional.one_hot(torch.tensor(index), len(names)).float()
            weights = neutral + strength * (target - neutral)
            samples = [
                "".join(writer.generate("", length=args.length, random_seed=1000 * index + k,
                                        style=weights))
                for k in range(args.samples)
            ]  # fmt: skip
            counts = landing(samples, attributor)
            report["runs"].append(
                {"strength": strength, "style": name, "to": counts, "first": samples[0][:300]}
            )
            print(f"strength {strength:g} {name}: {counts}", flush=True)
    name = f"styles-strength-{processor_name().lower().replace(' ', '-')}.json"
    path = args.json or ROOT / "benchmarks" / "results" / name
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
