"""Mutation score of bookgen's stateful core: of many deliberately broken copies, how many the
tests catch.

mutmut (configured in pyproject.toml, `[tool.mutmut]`) writes every small change it can make to
the core modules (`<` for `<=`, a constant changed, a call argument dropped, ...) into a copy of
the package in `mutants/`, and runs, for each one, the tests that reach the changed function.
A mutant is *caught* when a test fails (or hangs); it *survives* when they all pass, or when no
test reaches it. The score is caught / all.

The core is the stateful path, in the order the data flows: streams, model, scoring, the
trainer's step and loop, checkpoint, sampler, copy guard. A full run has about 2,600 mutants,
many hours on two cores, so by default a fixed sample is run (chosen by a hash of each mutant's
name: the same sample every time, so a score before a change and after it compare the same
mutants; a smaller sample is part of a larger one). An interrupted run goes on where it was.

    python tools/mutation.py                  # the default sample (a sixteenth of the mutants)
    python tools/mutation.py --sample 1       # all of them
    python tools/mutation.py --report         # score what mutants/ already holds, run nothing
    python tools/mutation.py --show           # ... and print every survivor's diff

Prints the score per module and writes benchmarks/results/mutation.json (or --json). Not a CI
step: it takes tens of minutes. `mutants/` is a scratch folder (git-ignored); delete it to start
over after the tests change (mutmut reruns what changed, but only tracks the source).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

from bookgen.context import processor_name

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]

# Which mutants make up each part of the core (fnmatch patterns over mutmut's names: module,
# then `x_function` or `xǁClassǁmethod`, then `__mutmut_N`). Of training, the step and the loop
# around it, wherever they live (the step in step.py, the loop in trainer.py, the schedule it
# follows, validation); opening a run (sizing, precision probe, embeddings) and writing its
# folder are not the stateful core.
TRAINER_PARTS = [
    "step.x_train_step",
    "step.x_forward_backward",
    "step.x_window_loss",
    "step.x__scored",
    "step.x_update",
    "step.x_carried",
    "step.x_weights_finite",
    "trainer.xǁTrainerǁ_train",
    "trainer.xǁTrainerǁ_windows",
    "trainer.xǁTrainerǁ_step",
    "trainer.xǁTrainerǁ_read_due",
    "trainer.xǁTrainerǁ_read_back",
    "trainer.xǁTrainerǁ_bad_step",
    "trainer.xǁTrainerǁ_stop_if_asked",
    "trainer.xǁTrainerǁ_evaluate_and_save",
    "trainer.xǁTrainerǁepochs",
    "trainer.xǁTrainerǁ_budget_used",
    "schedule.x_learning_rate",
    "schedule.x_budget_used",
    "schedule.x_evaluation_reserve",
    "schedule.xǁRunClockǁ*",
    "validation.xǁValidationǁ__init__",
    "validation.xǁValidationǁloss",
]
CORE = {
    "streams": ["bookgen.streams.*"],
    "model": ["bookgen.model.*", "bookgen.settings.xǁModelConfigǁ*"],
    "scoring": ["bookgen.scoring.*"],
    "trainer (step and loop)": [f"bookgen.{part}__mutmut_*" for part in TRAINER_PARTS],
    "checkpoint": ["bookgen.checkpoint.*"],
    "sampler": [
        "bookgen.sampler.*",
        "bookgen.device_sampler.*",
        "bookgen.settings.xǁSamplingSettingsǁ*",
    ],
    "guard": ["bookgen.guard.*"],
}

# mutmut's exit codes (mutmut/stats.py): what each means for the score.
CAUGHT = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout"}
MISSED = {0: "survived", 5: "no tests", 33: "no tests"}


def part_of(name: str) -> str | None:
    for part, patterns in CORE.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return part
    return None


def in_sample(name: str, fraction: float) -> bool:
    """A fixed pseudo-random choice of mutants: the same names every run, whatever the order."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def read_results() -> dict[str, int | None]:
    """{mutant name: exit code, or None if not run yet} from mutmut's files in mutants/."""
    results: dict[str, int | None] = {}
    for meta in (ROOT / "mutants" / "bookgen").glob("*.py.meta"):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def mutmut(*args: str) -> None:
    # Two workers of one thread each: the tests' models are tiny, and two threads per worker
    # would oversubscribe two cores (OpenMP threads spinning against each other).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*MUTMUT, *args], cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(f"mutmut {' '.join(args[:1])} failed (exit {done.returncode})")


def run(fraction: float) -> None:
    if not read_results():
        # mutmut writes the mutants (and learns which tests reach which function) on its first
        # run; one mutant is the cheapest way to have it do that before the sample is drawn.
        mutmut("run", "--max-children", "2", "bookgen.scoring.x_bits_per_char__mutmut_1")
    results = read_results()
    chosen = sorted(n for n in results if part_of(n) and in_sample(n, fraction))
    # What an interrupted run has done stands (mutmut reruns every name it is given).
    left = [n for n in chosen if results[n] is None]
    print(f"{len(chosen)} mutants of the core in the sample, {len(left)} to run", flush=True)
    if left:
        mutmut("run", "--max-children", "2", *left)


def score(fraction: float) -> dict:
    results = {n: c for n, c in read_results().items() if part_of(n) and in_sample(n, fraction)}
    parts: dict[str, Counter] = {part: Counter() for part in CORE}
    survivors = []
    for name, code in sorted(results.items()):
        if code is None:
            outcome = "not run"
        elif code in CAUGHT:
            outcome = "caught"
        elif code in MISSED:
            outcome = MISSED[code]
            survivors.append({"mutant": name, "outcome": outcome})
        else:
            outcome = "other"  # suspicious, skipped, segfault: left out of the score
        parts[part_of(name)][outcome] += 1
    table = {}
    for part, counts in parts.items():
        judged = counts["caught"] + counts["survived"] + counts["no tests"]
        table[part] = {**counts, "score": counts["caught"] / judged if judged else None}
    totals = sum(parts.values(), Counter())
    judged = totals["caught"] + totals["survived"] + totals["no tests"]
    return {
        "sample": fraction,
        "parts": table,
        "total": {**totals, "score": totals["caught"] / judged if judged else None},
        "survivors": survivors,
    }


def print_table(result: dict) -> None:
    columns = ("caught", "survived", "no tests", "not run", "other")
    print(f"{'part':26}" + "".join(f"{c:>10}" for c in columns) + f"{'score':>8}")
    rows = [*result["parts"].items(), ("all", result["total"])]
    for part, counts in rows:
        value = counts["score"]
        shown = f"{value:.1%}" if value is not None else "-"
        print(f"{part:26}" + "".join(f"{counts.get(c, 0):>10}" for c in columns) + f"{shown:>8}")


def show(survivors: list[dict]) -> None:
    for survivor in survivors:
        subprocess.run([*MUTMUT, "show", survivor["mutant"]], cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=float, default=1 / 16, help="share of mutants to run")
    parser.add_argument("--report", action="store_true", help="score mutants/ as it is")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/mutation.json")
    args = parser.parse_args()
    if not 0 < args.sample <= 1:
        parser.error("--sample must be in (0, 1]")
    begin = time.perf_counter()
    if not args.report:
        run(args.sample)
    result = score(args.sample)
    result["date"] = date.today().isoformat()
    result["minutes"] = round((time.perf_counter() - begin) / 60, 1)
    result["processor"] = processor_name()
    print_table(result)
    if args.show:
        show(result["survivors"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
