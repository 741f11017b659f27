"""Writing with a trained model: `bookgen sample` (one continuation) and `bookgen chat`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from bookgen.cli.console import err
from bookgen.cli.inspect import ADAPTING, AdaptDecayOption, AdaptLrOption
from bookgen.cli.options import (
    CheckpointOption,
    LengthOption,
    MaxCopyOption,
    RandomSeedOption,
    TemperatureOption,
    TopKOption,
    TopPOption,
)
from bookgen.settings import WRITING_ADAPT_LR, AdaptSettings
from bookgen.settings import SamplingSettings as Sampling
from bookgen.styles import STYLE_HELP

# sample, chat: the style to write in (a model trained on several styles).
StyleOption = Annotated[
    Optional[str], typer.Option(help=STYLE_HELP, metavar="SPEC", show_default=False)
]

AdaptOnOption = Annotated[
    Optional[Path],
    typer.Option(
        "--adapt-on",
        help="A passage of your own (your names, your diction), read as books are read (any "
        "encoding): the model first reads it, adapting its weights to it in memory (dynamic "
        "evaluation), then writes. The checkpoint on disk is not changed.",
        metavar="FILE",
        show_default=False,
        rich_help_panel=ADAPTING,
    ),
]


def sample(
    seed: Annotated[
        str,
        typer.Option(
            help="Text to start from. The model reads all of it first, then continues it."
        ),
    ] = "",
    checkpoint: CheckpointOption = None,
    length: LengthOption = Sampling.length,
    temperature: TemperatureOption = Sampling.temperature,
    top_k: TopKOption = Sampling.top_k,
    top_p: TopPOption = Sampling.top_p,
    max_copy: MaxCopyOption = Sampling.max_copy,
    random_seed: RandomSeedOption = None,
    style: StyleOption = None,
    adapt_on: AdaptOnOption = None,
    adapt_lr: AdaptLrOption = WRITING_ADAPT_LR,
    adapt_decay: AdaptDecayOption = AdaptSettings.adapt_decay,
) -> None:
    """Write a continuation of --seed in the style of the book.

    stdout carries only the seed and the continuation, streamed as it is written, so it can be
    piped. The continuation is drawn at random from the model's predictions, so a model primed
    with "K" may well go on with any letter; use --temperature 0 for the single likeliest text.
    The copy guard (--max-copy) keeps the model from writing out long passages of its book; the
    seed is yours and does not count.

    A model trained on several styles (authors, books) writes in the one --style names, or a
    mix: --style austen, --style austen=0.7,shelley=0.3. bookgen styles lists the styles a model
    knows. Without --style it starts from the mix of them all, each weighted by its share of
    the training text.

    --adapt-on FILE first adapts the model to a passage of your own, so that it writes with
    your characters' names and your turns of phrase, without training: it reads the passage
    taking a small gradient step every 50 tokens (as bookgen eval --adapt does), then reads
    --seed from a fresh state and writes. The adapted weights live in memory for this run
    only; the checkpoint is never changed. A typical use, a page or two of your own story:

    bookgen sample --adapt-on my-chapter.txt --seed "ZORBALIND:" --length 500

    Writing takes a larger --adapt-lr (2e-3) than bookgen eval --adapt (5e-4, for long texts).
    Measured on Tiny Shakespeare's 10-minute model and a 1,100-character passage with four
    invented names (benchmarks/adapt_names.py), 20 samples of 500 characters: 0 wrote a name
    unadapted, 2 at 5e-4, 8 at 1e-3, all 20 at 2e-3 (its loss on other text up 0.11
    nats/char); at 1e-2 the text garbles.
    """
    from bookgen.errors import BookgenError

    settings = Sampling(
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, max_copy=max_copy
    )  # a bad setting fails here, before the model loads
    adapting = AdaptSettings(adapt_lr=adapt_lr, adapt_decay=adapt_decay)
    passage = None
    if adapt_on is not None:
        from bookgen.corpus import read_document

        passage = read_document(adapt_on).text  # a missing or empty file is said before loading
    elif adapting != AdaptSettings(adapt_lr=WRITING_ADAPT_LR):
        raise BookgenError(
            "--adapt-lr and --adapt-decay need --adapt-on FILE: the text to adapt to"
        )

    from bookgen.sampler import load

    writer = load(checkpoint)
    weights = writer.style_weights(style)  # an unknown style is said before anything is built
    guard = writer.copy_guard(max_copy)  # its index, built now if need be: before the seed shows
    if passage is not None:
        writer = writer.adapted(passage, adapting, style=weights)
    pieces = writer.generate(seed, random_seed=random_seed, style=weights, **asdict(settings))
    out = sys.stdout
    out.write(seed)
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    if guard is not None and guard.excluded:
        _say_what_the_guard_did(guard, max_copy)


def _say_what_the_guard_did(guard, max_copy: int) -> None:
    # Some are the index's false alarms (about 1 draw in 1,300), so they are not all copies.
    fallbacks = (
        f"; {guard.fallbacks} could not be, nothing else being left" if guard.fallbacks else ""
    )
    err.print(
        f"copy guard: {guard.excluded} token(s) drawn again, where a run of the book would "
        f"have grown past {max_copy} characters (or, about 1 draw in 1,300, a false alarm)"
        + fallbacks,
        style="dim",
        markup=False,
    )


def chat(
    checkpoint: CheckpointOption = None,
    length: LengthOption = Sampling.length,
    temperature: TemperatureOption = Sampling.temperature,
    top_k: TopKOption = Sampling.top_k,
    top_p: TopPOption = Sampling.top_p,
    max_copy: MaxCopyOption = Sampling.max_copy,
    random_seed: RandomSeedOption = None,
    style: StyleOption = None,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt",
            help="Adapt the model to the story as it is written (dynamic evaluation): each "
            "turn it learns from the text added since the last, so it keeps to your names and "
            "words. /undo restores the weights too, /reset the trained ones; the checkpoint is "
            "never changed.",
            rich_help_panel=ADAPTING,
        ),
    ] = False,
    adapt_lr: AdaptLrOption = WRITING_ADAPT_LR,
    adapt_decay: AdaptDecayOption = AdaptSettings.adapt_decay,
) -> None:
    """Write a story together with the model, turn by turn, in the terminal.

    You type some text, the model continues it; then you type more. The model's hidden state
    carries across turns, so it remembers the whole story without re-reading it; only your new
    text is read each turn. Your text is read exactly as typed (start with a space to begin a
    new word). Type /help in the session for commands (/undo, /retry, /reset, /temperature,
    /copy, /style, /save, /quit). Ctrl-C stops the model mid-turn; Ctrl-C or Ctrl-D at an
    empty prompt ends the session. With stdin from a pipe, each line is one turn:
    printf 'It was\\n/quit\\n' | bookgen chat

    With --adapt the model learns from the story as it goes (your names, your words): once a
    turn, a small gradient step every 50 tokens of the text added, in memory only.
    """
    from bookgen.errors import BookgenError
    from bookgen.interactive import chat_main

    settings = Sampling(
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, max_copy=max_copy
    )
    adapting = AdaptSettings(adapt_lr=adapt_lr, adapt_decay=adapt_decay)
    if not adapt and adapting != AdaptSettings(adapt_lr=WRITING_ADAPT_LR):
        raise BookgenError("--adapt-lr and --adapt-decay need --adapt")
    raise typer.Exit(
        chat_main(checkpoint, random_seed, settings, style, adapting if adapt else None)
    )
