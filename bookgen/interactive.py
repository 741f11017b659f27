"""`bookgen chat`: what a person types and sees while writing a story with the model.

The story itself (its text, the model's state, the settings) is a `Story` (story.py). Here:
the slash commands that act on it and what they answer (`command`, `HELP`); `run_chat`, the
loop, with input and output injected so tests drive it without a terminal; and `chat_main`,
which wires the loop to a terminal or a pipe.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TextIO

from rich.console import Console

from bookgen.errors import BookgenError, BookgenWarning
from bookgen.sampler import SamplingSettings, load
from bookgen.settings import AdaptSettings
from bookgen.story import ADAPT_UNDO, Story
from bookgen.styles import describe, weaken

PROMPT = "> "
MODEL_STYLE = "cyan"  # the model's text; the user's stays in the terminal's own colour


# --- the slash commands ------------------------------------------------------------------------

# Command -> (SamplingSettings field, type of its value, what it takes).
SETTING_COMMANDS: dict[str, tuple[str, type, str]] = {
    "/temperature": ("temperature", float, "X"),
    "/top-k": ("top_k", int, "K"),
    "/top-p": ("top_p", float, "P"),
    "/length": ("length", int, "N"),
    "/copy": ("max_copy", int, "N"),
}


def _settings_help() -> str:
    # Read from SamplingSettings, like --help: one definition of each setting.
    rows = []
    for name, (field, _, value) in SETTING_COMMANDS.items():
        text = SamplingSettings.help(field)
        if field == "length":
            text = "Per turn: " + text[0].lower() + text[1:] + " 0: only read your text."
        head = f"  {name + ' ' + value:<15} "
        rows.append(textwrap.fill(text, 96, initial_indent=head, subsequent_indent=" " * 18))
    return "\n".join(rows)


HELP = f"""\
Type text and the model continues it; each turn carries on from where the story stands.
Your text is read exactly as typed and joined straight onto the story: "It was" is continued
mid-sentence; start with a space to begin a new word, type \\n for a line break, and // for a
text that starts with /. An empty line lets the model go on.
{_settings_help()}
  /style SPEC     write in style SPEC from now on: a name (austen) or a mix of them
                  (austen=0.7,shelley=0.3); the story so far is read again in it; bookgen styles
                  lists a model's styles; /style alone shows the style
  /retry          write the last continuation again, with new draws
  /undo           take back the last turn, yours and the model's, or the last /style
  /reset          forget the story and start a new one
  /save FILE      write the story so far to FILE
  /quit           end the session (so do Ctrl-D, and Ctrl-C at an empty prompt)
Ctrl-C while the model writes stops it there; the story keeps what was written."""

ADAPT_HELP = f"""
Adapting is on (--adapt): at each turn the model learns from the text added since the last one
(its own and yours), so it keeps to the story's names and words. The weights change in memory
only, never in the checkpoint. /undo puts back the weights too (the last {ADAPT_UNDO} turns: each
keeps a copy of them); /reset puts back the trained weights."""


def help_text(story: Story) -> str:
    """What /help shows: the commands, and what adapting does when it is on."""
    return HELP + ADAPT_HELP if story.adapter is not None else HELP


class EndSession(Exception):
    """Raised by `/quit`."""


def command(story: Story, line: str) -> str | Generator[str, None, None]:
    """Run a slash command on `story`: returns the line to show, or for /retry the new
    continuation. Raises BookgenError (one line) for a bad command or value, EndSession for /quit.
    """
    name, _, argument = line.strip().partition(" ")
    argument = argument.strip()
    if name in SETTING_COMMANDS:
        return change_setting(story, name, argument)
    if name == "/style":
        return change_style(story, argument)
    if name == "/retry":
        return story.retry()
    if name == "/undo":
        style = story.style
        story.undo()
        if story.style is not style:
            return f"undone: the style is back to {style_text(story)}"
        return f"undone: the story is back to {len(story.text):,} characters"
    if name == "/reset":
        story.reset()
        if story.adapter is not None:
            return "reset: a new story, from a fresh state and the trained weights"
        return "reset: a new story, from a fresh state"
    if name == "/save":
        if not argument:
            raise BookgenError("usage: /save FILE")
        path = story.save(argument)
        return f"saved {len(story.text):,} characters to {path}"
    if name == "/help":
        return help_text(story)
    if name == "/quit":
        raise EndSession
    raise BookgenError(f"unknown command {name}: /help lists the commands")


def change_setting(story: Story, name: str, argument: str) -> str:
    """/temperature 0.5 and the like: set the value given (none: only show it), say it."""
    field, kind, _ = SETTING_COMMANDS[name]
    label = name[1:]
    if argument:
        try:
            value = kind(argument)
        except ValueError:
            number = "a whole number" if kind is int else "a number"
            raise BookgenError(f"{label} takes {number}, not {argument!r}") from None
        story.use(dataclasses.replace(story.settings, **{field: value}))
    value = getattr(story.settings, field)
    if field == "max_copy":
        return f"copy {value}: " + (
            f"never more than {value} characters of the book word for word" if value else "off"
        )
    return f"{label} {value:g}"


def change_style(story: Story, argument: str) -> str:
    """/style austen=0.7,shelley=0.3: write in that style from now on (none: only show it)."""
    if argument:
        story.restyle(argument)
        read = f"; the story so far ({len(story.text):,} characters) read again in it"
        return f"style {style_text(story)}" + (read if story.text else "")
    return f"style {style_text(story)}"


def style_text(story: Story) -> str:
    if story.style is None:
        return "the model's own (it was trained on one style)"
    return describe(weaken(story.style.tolist(), story.writer.styles), story.writer.styles)


# --- the loop ----------------------------------------------------------------------------------

Output = Console | TextIO


class _Screen:
    """Where the loop writes: the story to `out`, messages to `messages`."""

    def __init__(self, out: Output, messages: Output, interactive: bool) -> None:
        self.out, self.messages, self.interactive = out, messages, interactive

    def user(self, text: str) -> None:
        # A person sees their text where they typed it; a pipe gets it echoed into the story.
        if not self.interactive:
            _write(self.out, text)

    def model(self, piece: str) -> None:
        _write(self.out, piece, MODEL_STYLE)

    def end_turn(self) -> None:
        _write(self.out, "\n")

    def note(self, text: str, style: str = "dim") -> None:
        _write(self.messages, text + "\n", style)


def _write(target: Output, text: str, style: str | None = None) -> None:
    # Flushed piece by piece: the point of streaming is to see the text as it is written.
    if isinstance(target, Console):
        # out(), not print(): no markup, wrapping or highlighting in the book's text.
        target.out(text, style=style, end="", highlight=False)
        target.file.flush()
    else:
        target.write(text)
        target.flush()


def run_chat(
    story: Story,
    read_line: Callable[[str], str],
    out: Output,
    interactive: bool,
    messages: Output | None = None,
) -> int:
    """Read lines and answer them until /quit, EOF or Ctrl-C at the prompt; returns 0.

    `read_line(prompt)` returns a line without its line end, raising EOFError at the end of
    input. The story goes to `out`; acknowledgements, warnings and errors to `messages`
    (default: `out`).
    """
    screen = _Screen(out, messages if messages is not None else out, interactive)
    while True:
        try:
            line = read_line(PROMPT if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                screen.end_turn()  # the shell's prompt starts on its own line
            return 0
        try:
            if line.startswith("/") and not line.startswith("//"):
                reply = command(story, line)
            else:
                text = typed_text(line)
                reply = _read_with_warnings(screen, story, text)
                screen.user(text)
        except EndSession:
            return 0
        except BookgenError as error:
            screen.note(f"error: {error}", "red")
            continue
        except KeyboardInterrupt:  # while the model read a long text: nothing changed
            screen.note("(stopped)")
            continue
        if isinstance(reply, str):
            screen.note(reply)
        else:
            _show(screen, reply)


def typed_text(line: str) -> str:
    """The text a typed line stands for: \\n is a line break, a leading // a leading /."""
    if line.startswith("//"):
        line = line[1:]
    return line.replace("\\n", "\n")


def _read_with_warnings(screen: _Screen, story: Story, text: str) -> Generator[str, None, None]:
    # Unknown characters warn once per turn, as one line, and the turn goes on.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BookgenWarning)
        pieces = story.turn(text)
    for warning in caught:
        if issubclass(warning.category, BookgenWarning):
            screen.note(f"warning: {warning.message}", "yellow")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return pieces


def _show(screen: _Screen, pieces: Generator[str, None, None]) -> None:
    try:
        for piece in pieces:
            screen.model(piece)
    except KeyboardInterrupt:
        pieces.close()  # the story keeps what was written so far
        screen.end_turn()
        screen.note("(stopped)")
        return
    screen.end_turn()


def chat_main(
    checkpoint: Path | None = None,
    random_seed: int | None = None,
    settings: SamplingSettings | None = None,
    style: str | None = None,
    adapt: AdaptSettings | None = None,
) -> int:
    """`bookgen chat`: a session in the terminal, or line by line from a pipe. Returns 0.

    Raises BookgenError for bad settings, a style the model does not know or a checkpoint that
    cannot be loaded. With `adapt`, the model adapts to the story as it is written (story.py).
    """
    writer = load(checkpoint)
    story = Story(
        writer, settings, random_seed, style, adapt
    )  # a missing book is said now, not mid-story
    if not sys.stdin.isatty():
        # stdout carries only the story, so it can be piped on; messages go to stderr.
        return run_chat(story, _read_piped_line, sys.stdout, False, Console(stderr=True))
    console = Console(highlight=False)
    where = writer.checkpoint.path if writer.checkpoint is not None else checkpoint
    banner = f"bookgen chat with {where}: type text and the model continues it; /help for commands"
    if story.style is not None:
        banner += f"; style {style_text(story)} (/style to change it)"
    if adapt is not None:
        banner += "; adapting to the story as it is written (/help says how)"
    console.print(banner, style="bold", markup=False, soft_wrap=True)  # one line, however wide
    return run_chat(story, _terminal_reader(), console, True)


def _read_piped_line(prompt: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n").removesuffix("\r")


def _terminal_reader() -> Callable[[str], str]:
    """input() with line editing and in-memory history where readline exists."""
    try:
        import readline  # noqa: F401  (importing it gives input() editing and history)
    except ImportError:  # e.g. Windows: plain input()
        readline = None

    def read_line(prompt: str) -> str:
        while True:
            try:
                return input(prompt)
            except KeyboardInterrupt:
                # Ctrl-C on a half-typed line drops the line, as in a shell; on an empty
                # line it ends the session.
                if readline is None or not readline.get_line_buffer():
                    raise
                print()

    return read_line
