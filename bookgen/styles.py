"""The styles a model was trained on, and a style asked for by name or as a mix.

A model trained on several styles (authors, or books: see `ModelConfig.styles`) records them in
its manifest, in style-id order, each with its share of the training tokens:

    manifest["corpus"]["styles"] = [{"name": "austen", "share": 0.41}, {"name": "shelley", ...}]

A style spec names one of them or mixes several, and reads as weights over all of them:

    "austen"                      -> [1.0, 0.0]
    "austen=0.7,shelley=0.3"      -> [0.7, 0.3]
    "austen=2,shelley=1"          -> [0.667, 0.333]      (weights are normalised to sum 1)
    "austen,shelley"              -> [0.5, 0.5]          (a bare name weighs 1)

The model mixes its learned starts and style vectors with these weights (model.py), after
`strengthen` has pushed them further from the neutral mix (STYLE_STRENGTH). With no spec, a
styled model starts from the neutral mix: the styles weighted by their shares.

No torch here: the weights are plain floats, which the sampler makes a tensor of, and
`bookgen --help` reads `STYLE_HELP` without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bookgen.errors import BookgenError

# --style's help (sample, chat); "\\[" because typer's rich help reads [...] as markup.
STYLE_HELP = (
    "The style to write in, for a model trained on several (bookgen styles lists them): a "
    "name (austen), or a mix of names with weights (austen=0.7,shelley=0.3), which must not be "
    "negative and are scaled to sum 1; a name alone weighs 1. \\[default: the mix of the styles "
    "weighted by their share of the training text]"
)


@dataclass(frozen=True)
class Style:
    """One style a model learned: its name and its share of the training tokens (0..1)."""

    name: str
    share: float


def model_styles(manifest: dict) -> list[Style]:
    """The styles of a checkpoint's manifest, in style-id order; [] for a one-style model.

    A styled model whose manifest names no styles (written by hand, or before names were
    recorded) gets the names "1", "2", ... and equal shares, so it can still be asked for one.
    """
    count = int(manifest.get("model_config", {}).get("styles", 0) or 0)
    if count < 2:
        return []
    recorded = manifest.get("corpus", {}).get("styles") or []
    if len(recorded) != count:
        return [Style(str(index + 1), 1 / count) for index in range(count)]
    return [Style(str(entry["name"]), float(entry.get("share", 0.0))) for entry in recorded]


def one_style_name(manifest: dict) -> str | None:
    """The name of a one-style model's style, where its manifest records one."""
    recorded = manifest.get("corpus", {}).get("styles") or []
    return str(recorded[0]["name"]) if len(recorded) == 1 else None


def neutral_weights(styles: list[Style]) -> list[float]:
    """The start without a style asked for: the styles weighted by their shares (equal
    weights where no share is recorded)."""
    shares = [max(style.share, 0.0) for style in styles]
    total = sum(shares)
    if not total > 0:
        return [1 / len(styles)] * len(styles)
    return [share / total for share in shares]


def parse_style(spec: str, styles: list[Style], one_style: str | None = None) -> list[float]:
    """The weights over `styles` that `spec` asks for (see the module's docstring).

    Raises BookgenError, in one line, for a name the model does not know (listing those it
    knows), for a model with one style (`styles` empty; `one_style` its name, if known), and
    for a mix that cannot be weights: a weight not a number, negative, a name given twice, or
    weights that sum to 0.
    """
    if not styles:
        named = f" ({one_style})" if one_style else ""
        raise BookgenError(
            f"this model was trained on one style{named}, so it takes no style ({spec!r} given)"
        )
    names = [style.name for style in styles]
    weights = dict.fromkeys(names, 0.0)
    given: set[str] = set()
    for part in spec.split(","):
        name, has_weight, number = (piece.strip() for piece in part.partition("="))
        if not name:
            raise BookgenError(f"style {spec!r}: expected a name, or name=weight, between commas")
        if name not in weights:
            raise BookgenError(f"unknown style {name!r}: this model knows {', '.join(names)}")
        if name in given:
            raise BookgenError(f"style {spec!r}: {name} is given twice")
        given.add(name)
        weights[name] = _weight(spec, name, number) if has_weight else 1.0
    total = sum(weights.values())
    if not total > 0:
        raise BookgenError(f"style {spec!r}: the weights sum to 0; give one above 0")
    return [weights[name] / total for name in names]


def _weight(spec: str, name: str, number: str) -> float:
    try:
        weight = float(number)
    except ValueError:
        raise BookgenError(
            f"style {spec!r}: the weight of {name} is not a number ({number!r})"
        ) from None
    if not math.isfinite(weight) or weight < 0:
        raise BookgenError(
            f"style {spec!r}: the weight of {name} must be a number of 0 or more, not {number}"
        )
    return weight


# How far a style asked for by name (or a mix) is pushed past itself, away from the neutral mix:
# the weights written with are neutral + STYLE_STRENGTH * (asked - neutral), so they still sum
# to 1, and `austen` becomes, on a three-style shelf, about 1.7 austen less some of the others.
# The style's learned vector and start are then followed further from the shelf's average.
# Measured (benchmarks/styles.py's 10-minute model, three books, 20 samples of 1,000 characters
# per style, attributed by bookgen style's 5-gram measure): strength 1 put 45%, 100% and 85% of
# the samples on their own book (Pride and Prejudice, Moby Dick, Sherlock Holmes), 1.5 put
# 90%, 100%, 100%, and 2 put all 60 there; each book's own model put 100% there.
STYLE_STRENGTH = 2.0


def strengthen(
    weights: list[float], styles: list[Style], strength: float = STYLE_STRENGTH
) -> list[float]:
    """`weights` pushed `strength` times as far from the neutral mix (see STYLE_STRENGTH)."""
    neutral = neutral_weights(styles)
    return [n + strength * (w - n) for w, n in zip(weights, neutral, strict=True)]


def weaken(weights: list[float], styles: list[Style], strength: float = STYLE_STRENGTH) -> list:
    """The weights asked for, from those `strengthen` made of them."""
    return strengthen(weights, styles, 1 / strength)


def describe(weights: list[float], styles: list[Style]) -> str:
    """Weights as a spec a person could type back: "austen", or "austen=0.7,shelley=0.3"."""
    # Below 1e-6 a weight is the rounding of `weaken` (or of float32), not a style asked for.
    used = [
        (style.name, weight)
        for style, weight in zip(styles, weights, strict=True)
        if abs(weight) > 1e-6
    ]
    if len(used) == 1:
        return used[0][0]
    return ",".join(f"{name}={weight:.2f}".rstrip("0").rstrip(".") for name, weight in used)


@dataclass
class StyleRow:
    """One row of `bookgen styles`: a style, its share, its last validation loss (if any)."""

    name: str
    share: float
    val_loss: float | None


def style_table(folder: Path | None) -> tuple[Path, list[StyleRow], str | None]:
    """`bookgen styles`: the checkpoint folder, one row per style (none for a one-style model)
    and, for a one-style model, the name of its style where it is recorded.

    The validation loss is the last evaluation's `val_loss_by_style` in metrics.jsonl.
    """
    from bookgen.checkpoint import latest_checkpoint, read_manifest, read_metrics

    folder = Path(folder) if folder is not None else latest_checkpoint()
    manifest = read_manifest(folder)
    styles = model_styles(manifest)
    last: dict = {}
    for record in read_metrics(folder):
        if isinstance(record.get("val_loss_by_style"), dict):
            last = record["val_loss_by_style"]
    rows = [StyleRow(s.name, s.share, _loss(last.get(s.name))) for s in styles]
    return folder, rows, one_style_name(manifest)


def _loss(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
