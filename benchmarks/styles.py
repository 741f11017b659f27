"""Benchmark: one model for a shelf of authors, against one model per author.

Trains one styled model on three books (Pride and Prejudice, Moby Dick, the Adventures of
Sherlock Holmes: `--style-by file`, so each book is a style) for --minutes, and three separate
models, one per book, for --minutes / 3 each: the same total time. Then:

- per book, the validation loss (nats per character, the book's held-out 10%) of the styled model,
  read from its best evaluation's `val_loss_by_style`, beside the separate model's best; the
  target is no more than 0.03 nats/char above it;
- per style, --samples samples of --length characters written with `style=<book>`, each
  attributed to the book whose character 5-gram model (bookgen style's measure, fitted on each
  whole book) gives it the fewest bits per character; the target is >= 95% to the style's book;
- samples written with no style (the neutral start: the styles mixed by their shares of the
  text), and where they land;
- one sample of an even mix of two styles, for the README.

With --designs start,embed,both (and shorter --minutes), it compares the ways a style is learned
instead (the separate models are then skipped unless --separate). Writes
benchmarks/results/styles-<processor>.json (or --json).

    python benchmarks/styles.py --minutes 10
    python benchmarks/styles.py --minutes 3 --designs start,embed,both,none --samples 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

import bookgen
from bookgen.checkpoint import read_metrics
from bookgen.context import processor_name
from bookgen.corpus import read_document
from bookgen.style import Alphabet, NgramModel, StyleSettings
from bookgen.styles import STYLE_STRENGTH

ROOT = Path(__file__).resolve().parents[1]
SHELF = ROOT.parent / "shared" / "corpora" / "gutenberg"
BOOKS = ["pride-and-prejudice", "moby-dick", "sherlock-holmes"]


def best_record(folder: Path) -> dict:
    """The evaluation record of the best validation loss (the weights `bookgen sample` uses)."""
    evaluations = [r for r in read_metrics(folder) if r.get("val_loss") is not None]
    return min(evaluations, key=lambda r: r["val_loss"])


class Attributor:
    """Which book is a text closest to, by `bookgen style`'s character n-gram measure."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.alphabet = Alphabet.of(list(texts.values()))
        order = StyleSettings().ngram_order
        self.models = {
            name: NgramModel.fit(self.alphabet.ids(text), self.alphabet.size, order)
            for name, text in texts.items()
        }

    def closest(self, text: str) -> str:
        ids = self.alphabet.ids(text)
        return min(self.models, key=lambda name: self.models[name].bits_per_char(ids))


def write(folder: Path, count: int, length: int, style: str | None, seed0: int) -> list[str]:
    writer = bookgen.load(folder)
    return [
        "".join(writer.generate("", length=length, random_seed=seed0 + i, style=style))
        for i in range(count)
    ]


def landing(samples: list[str], attributor: Attributor) -> dict[str, int]:
    counts = {name: 0 for name in attributor.models}
    for sample in samples:
        counts[attributor.closest(sample)] += 1
    return counts


def styled_run(
    paths: list[Path], design: str, minutes: float, folder: Path, args, attributor: Attributor
) -> dict:
    begin = time.perf_counter()
    style_by = "none" if design == "none" else "file"
    options = {} if design == "none" else {"style_design": design}
    options.update(args.size)
    result = bookgen.train(
        [str(p) for p in paths], folder, minutes=minutes, style_by=style_by, force=True, **options
    )
    wall = time.perf_counter() - begin
    best = best_record(folder)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    run = {
        "design": design,
        "model": manifest["model_config"],
        "steps": result.steps,
        "wall_s": round(wall, 1),
        "best_val_loss": round(best["val_loss"], 4),
        "val_loss_by_style": {k: round(v, 4) for k, v in best.get("val_loss_by_style", {}).items()},
    }
    return sampled(run, folder, args, attributor)


def sampled(run: dict, folder: Path, args, attributor: Attributor) -> dict:
    """`run` with its samples' attribution (per style asked for by name, at the default
    strength), a mix and where samples with no style land."""
    if run["design"] != "none":
        run["attribution"] = {}
        run["style_strength"] = STYLE_STRENGTH
        for index, name in enumerate(attributor.models):
            samples = write(folder, args.samples, args.length, name, 1000 * index)
            counts = landing(samples, attributor)
            run["attribution"][name] = {"to": counts, "share": counts[name] / len(samples)}
            run.setdefault("first_samples", {})[name] = samples[0][:400]
        names = list(attributor.models)
        mix = f"{names[0]}=0.5,{names[2]}=0.5"
        run["mix"] = {"style": mix, "sample": write(folder, 1, 400, mix, 7)[0]}
    neutral = write(folder, args.samples, args.length, None, 5000)
    run["no_style_lands_on"] = landing(neutral, attributor)
    return run


def alone_run(
    path: Path, minutes: float, folder: Path, size: dict, args, attributor: Attributor
) -> dict:
    if not args.separate_trained:
        bookgen.train(str(path), folder, minutes=minutes, force=True, **size)
    best = best_record(folder)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    # The baseline for attribution: how often the book's own model's samples land on it.
    counts = landing(write(folder, args.samples, args.length, None, 9000), attributor)
    return {
        "book": path.stem,
        "model": manifest["model_config"],
        "best_step": best["step"],
        "best_val_loss": round(best["val_loss"], 4),
        "attribution": {"to": counts, "share": counts[path.stem] / args.samples},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--designs", default="both", help="comma-separated: start,embed,both,none")
    parser.add_argument("--separate", action="store_true", help="also with several designs")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bookgen-styles"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--resample", action="store_true", help="with --styled-from: write its samples again"
    )
    parser.add_argument(
        "--separate-trained", action="store_true", help="the separate models are in --out"
    )
    parser.add_argument(
        "--styled-from", type=Path, default=None, help="a styled run's JSON: only train the rest"
    )
    parser.add_argument(
        "--size", default="", help="LAYERSxHIDDEN (e.g. 1x256) for every model; default: sized"
    )
    args = parser.parse_args()
    if args.size:
        layers, hidden = args.size.lower().split("x")
        args.size = {"layers": int(layers), "hidden_size": int(hidden)}
    else:
        args.size = {}
    paths = [SHELF / f"{name}.txt" for name in BOOKS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"not found: {', '.join(missing)}: this benchmark needs ../shared/corpora")
    designs = args.designs.split(",")
    attributor = Attributor({p.stem: read_document(p).text for p in paths})
    report = {
        "benchmark": "one styled model on three books vs one model per book, same total time",
        "command": "python benchmarks/styles.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "date": date.today().isoformat(),
        "processor": processor_name(),
        "minutes": args.minutes,
        "books": BOOKS,
        "samples_per_style": args.samples,
        "sample_length": args.length,
        "styled": [],
    }
    for design in designs:
        if args.styled_from:  # a styled run trained before (its JSON), not trained again
            run = json.loads(args.styled_from.read_text())
            if args.resample:
                run = sampled(run, args.out / run["design"], args, attributor)
            report["styled"].append(run)
            break
        run = styled_run(paths, design, args.minutes, args.out / design, args, attributor)
        report["styled"].append(run)
        print(json.dumps(run, indent=1))
    if len(designs) == 1 or args.separate:
        alone = [
            alone_run(
                p,
                args.minutes / len(paths),
                args.out / f"alone-{p.stem}",
                args.size,
                args,
                attributor,
            )  # fmt: skip
            for p in paths
        ]
        report["separate"] = alone
        for run in report["styled"]:
            if run["val_loss_by_style"]:
                run["above_separate"] = {
                    a["book"]: round(run["val_loss_by_style"][a["book"]] - a["best_val_loss"], 4)
                    for a in alone
                }
    path = (
        args.json or ROOT / "benchmarks" / "results" / f"styles-{_slug(report['processor'])}.json"
    )
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(_table(report))
    print(f"wrote {path}")


def _slug(name: str) -> str:
    return "-".join(name.lower().replace("(r)", "").split()[:3])


def _table(report: dict) -> str:
    lines = [f"{report['processor']}, {report['minutes']:g} min per styled model"]
    for run in report["styled"]:
        lines.append(f"design {run['design']}: best val {run['best_val_loss']}")
        for name, loss in run["val_loss_by_style"].items():
            above = run.get("above_separate", {}).get(name)
            share = run.get("attribution", {}).get(name, {}).get("share")
            lines.append(
                f"  {name:22} val {loss:.4f}"
                + (f"  vs alone {above:+.4f}" if above is not None else "")
                + (f"  attributed {share:.0%}" if share is not None else "")
            )
        lines.append(f"  no style lands on: {run['no_style_lands_on']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
