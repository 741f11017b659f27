"""`bookgen report`: what a training run was set up with, what it reached, and its loss curves.

Everything comes from the checkpoint folder and nothing is trained or scored again: the manifest
(`checkpoint.json`) holds the books, the model and training settings, the precision and the
run's progress; `metrics.jsonl` holds one record per evaluation (step, tokens, train_loss,
val_loss in nats per token, val_bits_per_char, lr, elapsed_s, tokens_per_s).

The curves are drawn twice over: as text for the terminal (plotext) and as a PNG (matplotlib).
Both libraries are imported only when a curve is drawn, so `import bookgen` stays fast, and a
missing one is a one-line error that says how to install it.

`val_sparkline` is the one-line version for a live display: the validation losses so far as
unicode bars.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bookgen.checkpoint import latest_checkpoint, read_manifest, read_metrics
from bookgen.context import PrecisionChoice
from bookgen.errors import BookgenError
from bookgen.files import atomic_write
from bookgen.model import ModelConfig, RecurrentLM

# Eight bar heights: the lowest value of a sparkline is the lowest bar.
SPARK_BARS = "▁▂▃▄▅▆▇█"
NOT_FINITE_BAR = "×"  # an evaluation whose loss was NaN or infinite
CURVE_WIDTH, CURVE_HEIGHT = 80, 20  # terminal cells: the default, and what tests measure
X_TICKS = 6  # step labels on the terminal plot's x axis
PNG_SIZE = (8.0, 4.5)  # inches, at PNG_DPI: 800 x 450 pixels
PNG_DPI = 100
LOSS_LABEL = "loss (nats/token)"


@dataclass
class RunReport:
    """One training run as recorded in its checkpoint folder.

    Losses are mean nats per target token (natural log), as the trainer records them.
    `evaluations` are the metrics.jsonl records, in order.
    """

    folder: Path
    books: list[str]
    characters: int  # of all books, before the validation split
    level: str  # "char" or "word"
    cell: str
    layers: int
    hidden_size: int
    embed_size: int
    vocab_size: int
    tied: bool  # input and output embeddings shared
    parameters: int
    dropout: float
    batch_size: int | None  # None: not recorded
    bptt: int | None
    learning_rate: float | None
    budget: str  # e.g. "2 minutes", "40 steps"
    device: str  # as asked: auto, cpu or cuda
    machine: dict  # where it trained (processor, device, threads, processes, torch); {} if older
    precision: str  # fp32 or bf16
    precision_note: str  # how it was chosen, with the measured speeds
    steps: int
    epochs: float  # read through the training text, with the share of the current epoch
    tokens_seen: int
    elapsed_s: float  # the whole run: reading, training, evaluating, saving
    best_val_loss: float | None
    best_step: int | None
    best_bits_per_char: float | None  # of the evaluation at best_step
    evaluations: list[dict] = field(default_factory=list)
    # The styles the model learned, in id order: {"name", "share"} each; [] for one style.
    styles: list[dict] = field(default_factory=list)
    style_by: str = "none"  # how the books were labelled: file, folder or none

    @property
    def tokens_per_s(self) -> float:
        """Training tokens over the whole run's time (so below the speed of the steps alone)."""
        return self.tokens_seen / self.elapsed_s if self.elapsed_s > 0 else 0.0


# --- reading ---------------------------------------------------------------------------------


def load_report(folder: str | Path | None = None) -> RunReport:
    """Read a run's report from its checkpoint folder (default: the newest under checkpoints/)."""
    folder = Path(folder) if folder is not None else latest_checkpoint()
    manifest = read_manifest(folder)  # a folder that is not a checkpoint fails here, in one line
    evaluations = read_metrics(folder)
    model, train = manifest["model_config"], manifest["train_config"]
    progress, precision = manifest["progress"], manifest["precision"]
    documents = manifest["corpus"].get("documents", [])
    try:
        best_step = progress.get("best_step")
        config = ModelConfig.from_dict(model)
        return RunReport(
            folder=folder,
            books=[d["name"] for d in documents],
            characters=sum(d["chars"] for d in documents),
            level=manifest["level"],
            cell=model["cell"],
            layers=model["layers"],
            hidden_size=model["hidden_size"],
            embed_size=model["embed_size"],
            vocab_size=model["vocab_size"],
            tied=config.tied,
            parameters=count_parameters(config),
            dropout=model["dropout"],
            batch_size=train.get("batch_size"),
            bptt=train.get("bptt"),
            learning_rate=train.get("learning_rate"),
            budget=describe_budget(train),
            device=train.get("device", "not recorded"),
            machine=dict(manifest.get("machine") or {}),
            precision=precision["precision"],
            precision_note=_precision_note(precision),
            steps=progress["step"],
            epochs=_epochs(progress, evaluations),
            tokens_seen=progress["tokens_seen"],
            elapsed_s=progress["elapsed_s"],
            best_val_loss=progress.get("best_val_loss"),
            best_step=best_step,
            best_bits_per_char=_bits_at(evaluations, best_step),
            evaluations=evaluations,
            styles=list(manifest["corpus"].get("styles") or []),
            style_by=manifest["corpus"].get("style_by", "none"),
        )
    except (KeyError, TypeError) as err:
        raise BookgenError(f"{folder}: damaged checkpoint manifest (no valid {err})") from err


def count_parameters(config: ModelConfig) -> int:
    """The model's parameter count, from its `ModelConfig` alone: built on the meta device (no
    memory, no random draws), so it is exact for any cell, size and tying without the weights."""
    with torch.device("meta"):
        return RecurrentLM(config).parameter_count()


def describe_budget(train_config: dict) -> str:
    """The run's budget as given, e.g. "2 minutes" or "1,000 steps or 3 epochs"."""
    parts = []
    for name, unit in (("steps", "step"), ("epochs", "epoch"), ("minutes", "minute")):
        value = train_config.get(name)
        if value is not None:
            number = f"{value:,}" if isinstance(value, int) else f"{value:g}"
            parts.append(f"{number} {unit}{'' if value == 1 else 's'}")
    return " or ".join(parts) or "not recorded"


def _precision_note(precision: dict) -> str:
    return PrecisionChoice.from_dict(precision).describe()


def _epochs(progress: dict, evaluations: list[dict]) -> float:
    """Epochs done: to the share of the current one when the last evaluation is at the last step
    (as at the end of every run), else whole epochs (the manifest alone has no row length)."""
    last = evaluations[-1] if evaluations else {}
    if last.get("step") == progress["step"] and "epoch" in last:
        return last["epoch"]
    return float(progress.get("epoch", 0))


def style_losses(report: RunReport) -> list[tuple[str, float, float | None]]:
    """(name, share of the training text, validation loss) of each style, the loss at the
    best step's evaluation (else the last that has them); [] for a model of one style."""
    if not report.styles:
        return []
    styled = [e for e in report.evaluations if e.get("val_loss_by_style")]
    at_best = [e for e in styled if e.get("step") == report.best_step]
    losses = (at_best or styled[-1:] or [{}])[0].get("val_loss_by_style", {})
    return [(s["name"], s.get("share", 0.0), losses.get(s["name"])) for s in report.styles]


def _bits_at(evaluations: list[dict], step: int | None) -> float | None:
    """Bits per character of the evaluation at `step` (None if there is none)."""
    matching = [r for r in evaluations if r.get("step") == step]
    return matching[-1].get("val_bits_per_char") if matching else None


# --- the tables ------------------------------------------------------------------------------


def report_renderables(report: RunReport, width: int = CURVE_WIDTH, height: int = CURVE_HEIGHT):
    """What `bookgen report` prints, in order: the settings, the results, the loss curves.

    Returns a list of rich renderables (two tables and the curves as text) for a Console.
    """
    from rich.text import Text

    if report.evaluations:
        curves = Text.from_ansi(terminal_curves(report, width, height))
    else:
        curves = Text(no_curve_message(report), style="yellow")
    return [settings_table(report), results_table(report), curves]


def settings_table(report: RunReport):
    from rich.table import Table

    table = Table(title=f"bookgen report: {report.folder}", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    characters = f"{report.characters:,} characters"
    table.add_row("books", f"{', '.join(report.books)} ({characters})")
    table.add_row("model", describe_model(report))
    settings = (
        f"batch {_or_unknown(report.batch_size)}, bptt {_or_unknown(report.bptt)}, "
        f"learning rate {_or_unknown(report.learning_rate, 'g')}, dropout {report.dropout:g}"
    )
    table.add_row("settings", settings)
    table.add_row("budget", report.budget)
    table.add_row("precision", report.precision_note)
    table.add_row("machine", describe_machine(report))
    if report.machine.get("size_note"):
        table.add_row("size", report.machine["size_note"])
    return table


def describe_machine(report: RunReport) -> str:
    """Where the run trained, e.g. "cpu, AMD EPYC, 2 threads, torch 2.13.0"."""
    machine = report.machine
    if not machine:
        return f"{report.device} (as asked; the machine is not recorded)"
    processes = machine.get("processes", 1)
    parts = [
        str(machine.get("device", report.device)),
        str(machine.get("processor", "?")),
        f"{machine.get('threads', '?')} threads",
        *([f"{processes} processes"] if processes > 1 else []),
        f"torch {machine.get('torch', '?')}",
    ]
    return ", ".join(parts)


def results_table(report: RunReport):
    from rich.table import Table

    table = Table(title="results", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    table.add_row("steps", f"{report.steps:,} ({report.epochs:.2f} epochs)")
    table.add_row("tokens seen", f"{report.tokens_seen:,}")
    table.add_row("time", describe_duration(report.elapsed_s))
    table.add_row("speed", speed_line(report))
    table.add_row("best validation loss", best_line(report))
    if report.best_bits_per_char is not None:
        table.add_row("bits per character", f"{report.best_bits_per_char:.4f} (at the best step)")
    for name, share, loss in style_losses(report):
        shown = "not evaluated" if loss is None else f"{loss:.4f} nats/token"
        table.add_row(f"  style {name}", f"{shown} ({share:.0%} of the training text)")
    table.add_row("evaluations", f"{len(report.evaluations)}")
    return table


def describe_model(report: RunReport) -> str:
    """e.g. "LSTM, 1 x 256, embedding 256 (tied), 66 characters, 543,298 parameters"."""
    tied = " (tied)" if report.tied else ""
    unit = "characters" if report.level == "char" else "words"
    return (
        f"{report.cell.upper()}, {report.layers} x {report.hidden_size}, "
        f"embedding {report.embed_size}{tied}, {report.vocab_size:,} {unit}, "
        f"{report.parameters:,} parameters"
    )


def best_line(report: RunReport) -> str:
    if report.best_val_loss is None:
        return "no evaluation yet"
    return f"{report.best_val_loss:.4f} nats/token at step {report.best_step:,}"


def speed_line(report: RunReport) -> str:
    # The trainer's own tokens_per_s counts from the start of the process as well.
    return f"{report.tokens_per_s:,.0f} tok/s (reading, sizing and evaluating included)"


def describe_duration(seconds: float) -> str:
    """e.g. "45.2 s", "1 min 58 s", "2 h 05 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def no_curve_message(report: RunReport) -> str:
    return (
        f"no evaluation yet (step {report.steps:,}), so there is no curve to draw: "
        "the first evaluation writes the first point"
    )


def _or_unknown(value, spec: str = "") -> str:
    return "?" if value is None else format(value, spec)


# --- the curves ------------------------------------------------------------------------------


def loss_curves(report: RunReport) -> dict[str, tuple[list[int], list[float]]]:
    """The curves to draw, by label: (steps, losses) of training and of validation.

    The training loss of a record is the mean over the steps since the evaluation before it.
    """
    curves = {}
    for label, key in (("train", "train_loss"), ("validation", "val_loss")):
        points = [(r["step"], r[key]) for r in report.evaluations if _finite(r.get(key))]
        if points:
            steps, losses = zip(*points, strict=True)
            curves[label] = (list(steps), list(losses))
    return curves


def terminal_curves(
    report: RunReport, width: int = CURVE_WIDTH, height: int = CURVE_HEIGHT, color: bool = True
) -> str:
    """The loss curves as text, `width` x `height` terminal cells (ANSI colours if `color`)."""
    curves = loss_curves(report)
    if not curves:
        return no_curve_message(report)
    figure = _plotext_figure()
    # plotext draws on one figure per process: start from a blank one every time.
    figure.clear()
    figure.theme("simple")  # colours the curves only, on the terminal's own background
    figure.plot_size(width, height)
    for label, (steps, losses) in curves.items():
        figure.draw(figure.signal(steps, losses, marker="braille").label(label).lines())
    # From step 0, with whole-number ticks (plotext would write 1.7e2 for step 170).
    last = max(max(steps) for steps, _ in curves.values())
    ticks = sorted({round(last * i / (X_TICKS - 1)) for i in range(X_TICKS)})
    figure.ruler("x").lim(0, last)
    figure.ruler("x").ticks(ticks, [f"{tick:,}" for tick in ticks])
    # Losses fall, steeply first: the bottom left corner is where the legend hides the least.
    bottom = min(min(losses) for _, losses in curves.values())
    figure.legend(x=0, y=bottom, relative=True, ha="left", va="bottom")
    figure.title(f"{', '.join(report.books)}: loss by step")
    figure.label("step", axis="x")
    figure.label(LOSS_LABEL, axis="y")
    return figure.build().string(colorless=not color)


def _plotext_figure():
    try:
        import plotext
    except ImportError as err:
        raise BookgenError(
            "the terminal curves need plotext, which is not installed: pip install plotext"
        ) from err
    if not hasattr(plotext.figure, "signal"):  # plotext 5 had another interface
        raise BookgenError("the terminal curves need plotext 6 or newer: pip install -U plotext")
    return plotext.figure


def write_png(report: RunReport, path: str | Path) -> Path:
    """Draw the loss curves into a PNG image at `path` (800 x 450 pixels); returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BookgenError(f"--png: the folder {path.parent} does not exist")
    if path.is_dir():
        raise BookgenError(f"--png: {path} is a folder; give a file name such as curves.png")
    curves = loss_curves(report)
    if not curves:
        raise BookgenError(f"--png: {report.folder} has {no_curve_message(report)}")
    image = io.BytesIO()
    _draw_png(report, curves).savefig(image, format="png", dpi=PNG_DPI)
    atomic_write(path, image.getvalue())
    return path


def _draw_png(report: RunReport, curves: dict):
    # A bare Figure renders with Agg and never touches pyplot or the user's chosen backend, so it
    # works without a display and leaves a notebook's matplotlib settings as they were.
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise BookgenError(
            "--png needs matplotlib, which is not installed: pip install matplotlib"
        ) from err
    figure = Figure(figsize=PNG_SIZE, layout="constrained")
    axes = figure.add_subplot()
    for label, (steps, losses) in curves.items():
        axes.plot(steps, losses, marker="." if len(steps) < 50 else None, label=label)
    if report.best_val_loss is not None and report.best_step is not None:
        # A ring around the best validation point, so the point itself still shows.
        best = (report.best_step, report.best_val_loss)
        axes.scatter(*best, s=80, facecolors="none", edgecolors="black", zorder=3)
        axes.annotate(f"best {best[1]:.4f} (step {best[0]:,})", best, textcoords="offset points",
                      xytext=(-6, 8), ha="right", fontsize=8)  # fmt: skip
    axes.set_xlim(left=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.set_title(f"{', '.join(report.books)}: {describe_model(report)}", fontsize=9)
    axes.set_xlabel("step")
    axes.set_ylabel(LOSS_LABEL)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


# --- the live display ------------------------------------------------------------------------


def val_sparkline(losses: list[float], width: int = 24) -> str:
    """The last `width` validation losses as unicode bars, one per evaluation; lower is better.

    The range of the losses shown (lowest to highest) is cut into eight equal bands, lowest
    "▁" to highest "█": [3, 2, 1] -> "█▅▁" (2 is halfway, the start of the fifth band). All
    equal: "▄" each. A NaN or infinite loss is "×" and left out of the range.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    shown = list(losses)[-width:]
    finite = [v for v in shown if _finite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    bars = []
    for value in shown:
        if not _finite(value):
            bars.append(NOT_FINITE_BAR)
        elif high == low:
            bars.append(SPARK_BARS[3])
        else:
            band = int((value - low) / (high - low) * len(SPARK_BARS))
            bars.append(SPARK_BARS[min(band, len(SPARK_BARS) - 1)])
    return "".join(bars)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
