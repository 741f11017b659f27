"""`bookgen chat`: write a story together with the model, one turn each.

The session is stateful. The model reads each turn's new text once, starting from its hidden
state after everything before, so a long story costs no more per turn than a short one:

    turn 1:  fresh state --read "It was"--> s1 --write " the best of"--> s2
    turn 2:  s2 --read " times"--> s3 --write ", it was"--> s4        (never re-reads turn 1)

Every turn keeps two snapshots: the state before it (for /undo) and the state after the
user's text (for /retry). `ChatSession` is the library object; `run_chat` is the loop, with
input and output injected so tests drive it without a terminal; `chat_main` wires it to one.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from rich.console import Console

from bookgen.errors import BookgenError, BookgenWarning
from bookgen.files import atomic_write
from bookgen.sampler import Primed, SamplingSettings, TextGenerator, load, make_generator

PROMPT = "> "
MODEL_STYLE = "cyan"  # the model's text; the user's stays in the terminal's own colour

# Command -> (SamplingSettings field, type of its value, what it takes).
SETTINGS: dict[str, tuple[str, type, str]] = {
    "/temperature": ("temperature", float, "X"),
    "/top-k": ("top_k", int, "K"),
    "/top-p": ("top_p", float, "P"),
    "/length": ("length", int, "N"),
    "/copy": ("max_copy", int, "N"),
}


def _settings_help() -> str:
    # Read from SamplingSettings, like --help: one definition of each setting.
    rows = []
    for command, (name, _, value) in SETTINGS.items():
        text = SamplingSettings.help(name)
        if name == "length":
            text = "Per turn: " + text[0].lower() + text[1:] + " 0: only read your text."
        head = f"  {command + ' ' + value:<15} "
        rows.append(textwrap.fill(text, 96, initial_indent=head, subsequent_indent=" " * 18))
    return "\n".join(rows)


HELP = f"""\
Type text and the model continues it; each turn carries on from where the story stands.
Your text is read exactly as typed and joined straight onto the story: "It was" is continued
mid-sentence; start with a space to begin a new word, type \\n for a line break, and // for a
text that starts with /. An empty line lets the model go on.
{_settings_help()}
  /retry          write the last continuation again, with new draws
  /undo           take back the last turn, yours and the model's
  /reset          forget the story and start a new one
  /save FILE      write the story so far to FILE
  /quit           end the session (so do Ctrl-D, and Ctrl-C at an empty prompt)
Ctrl-C while the model writes stops it there; the story keeps what was written."""


class EndSession(Exception):
    """Raised by `/quit`."""


@dataclass
class Snapshot:
    """What one turn changed, so it can be taken back (/undo) or written again (/retry)."""

    before: Primed | None  # the state before the user's text (None: fresh)
    transcript_length: int  # transcript entries before the turn
    after_user: Primed  # the state after the user's text, before the continuation


class ChatSession:
    """A story written in turns: the model's state, the settings, the text, the snapshots."""

    def __init__(
        self,
        writer: TextGenerator,
        settings: SamplingSettings | None = None,
        random_seed: int | None = None,
    ) -> None:
        self.writer = writer
        self.settings = settings or SamplingSettings()  # `length` is per turn
        self.generator: torch.Generator = make_generator(random_seed)
        self.primed: Primed | None = None  # None: the model has read nothing yet
        self.turns: list[Snapshot] = []
        self.transcript: list[tuple[str, str]] = []  # ("user" | "model", text), in story order
        self._writing: Generator[str, None, None] | None = None  # the continuation being read

    @property
    def text(self) -> str:
        """The story so far: the user's text as given to `turn`, the model's as written."""
        return "".join(text for _, text in self.transcript)

    def turn(self, user_text: str) -> Generator[str, None, None]:
        """Read `user_text` (now), then return the continuation, to be drawn piece by piece.

        An empty `user_text` lets the model go on from where it stands. A continuation still
        being read is closed first, keeping what was read of it (as in retry, undo, reset, save).
        """
        self._stop_writing()
        snapshot = Snapshot(
            before=self.primed.copy() if self.primed is not None else None,
            transcript_length=len(self.transcript),
            after_user=self.writer.prime(user_text, self.primed).copy(),
        )
        # Only now, with the text read, does anything change (a Ctrl-C above changes nothing).
        self.turns.append(snapshot)
        self.transcript.append(("user", user_text))
        self.primed = snapshot.after_user.copy()
        self._writing = self._continue(snapshot.after_user)
        return self._writing

    def retry(self) -> Generator[str, None, None]:
        """Drop the last continuation and draw a new one from the same state."""
        if not self.turns:
            raise BookgenError("nothing to retry yet")
        self._stop_writing()
        snapshot = self.turns[-1]
        del self.transcript[snapshot.transcript_length + 1 :]  # keep the user's text
        self.primed = snapshot.after_user.copy()
        self._writing = self._continue(snapshot.after_user)
        return self._writing

    def undo(self) -> None:
        """Take back the last turn: the state and the text are as they were before it."""
        if not self.turns:
            raise BookgenError("nothing to undo")
        self._stop_writing()
        snapshot = self.turns.pop()
        del self.transcript[snapshot.transcript_length :]
        self.primed = snapshot.before.copy() if snapshot.before is not None else None

    def reset(self) -> None:
        """Start a new story: the model forgets everything, as in a new session."""
        self._stop_writing()
        self.primed = None
        self.turns.clear()
        self.transcript.clear()

    def save(self, path: str | Path) -> Path:
        self._stop_writing()
        path = Path(path).expanduser()
        atomic_write(path, self.text.encode("utf-8"))
        return path

    def _stop_writing(self) -> None:
        if self._writing is not None:
            self._writing.close()
            self._writing = None

    def _continue(self, start: Primed) -> Generator[str, None, None]:
        """Stream the continuation from `self.primed` (equal to `start`), recording it."""
        pieces = self.writer.stream(self.primed, self.settings, self.generator)
        written: list[str] = []
        finished = False
        try:
            for piece in pieces:
                written.append(piece)
                yield piece
            finished = True
        finally:
            # Runs on completion, on close() (the consumer stopped) and on KeyboardInterrupt.
            pieces.close()
            text = "".join(written)
            self.transcript.append(("model", text))
            if not finished:
                # The sampler may have read more or less than it yielded when it was stopped;
                # re-read what was yielded, so the state is the state after the story's text.
                self.primed = self.writer.prime(text, start.copy())
                self._count_as_written(text, start)

    def _count_as_written(self, text: str, start: Primed) -> None:
        """Re-read text is still the model's own: the copy guard goes on counting it from where
        `start` stood (prime starts counting afresh, as after the user's text)."""
        guard = self.writer.copy_guard(self.settings.max_copy)
        if guard is not None:
            run = start.copy_run.copy() if start.copy_run is not None else None
            if run is None or run.run_tokens != guard.run_tokens:
                run = guard.new_run()
            for token in self.writer.tokenizer.encode(text):
                run.push(token)
            self.primed.copy_run = run

    def command(self, line: str) -> str | Generator[str, None, None]:
        """Run a slash command: returns the line to show, or for /retry the new continuation.

        Raises BookgenError (one line) for a bad command or value, EndSession for /quit.
        """
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        if name in SETTINGS:
            return self._set(name, argument)
        if name == "/retry":
            return self.retry()
        if name == "/undo":
            self.undo()
            return f"undone: the story is back to {len(self.text):,} characters"
        if name == "/reset":
            self.reset()
            return "reset: a new story, from a fresh state"
        if name == "/save":
            if not argument:
                raise BookgenError("usage: /save FILE")
            path = self.save(argument)
            return f"saved {len(self.text):,} characters to {path}"
        if name == "/help":
            return HELP
        if name == "/quit":
            raise EndSession
        raise BookgenError(f"unknown command {name}: /help lists the commands")

    def _set(self, name: str, argument: str) -> str:
        field, kind, _ = SETTINGS[name]
        label = name[1:]
        if argument:
            try:
                value = kind(argument)
            except ValueError:
                number = "a whole number" if kind is int else "a number"
                raise BookgenError(f"{label} takes {number}, not {argument!r}") from None
            settings = dataclasses.replace(self.settings, **{field: value})
            self.writer.copy_guard(settings.max_copy)  # its index, built now if need be
            self.settings = settings
        value = getattr(self.settings, field)
        if field == "max_copy":
            return f"copy {value}: " + (
                f"never more than {value} characters of the book word for word" if value else "off"
            )
        return f"{label} {value:g}"


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
    session: ChatSession,
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
                reply = session.command(line)
            else:
                text = typed_text(line)
                reply = _read_with_warnings(screen, session, text)
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


def _read_with_warnings(
    screen: _Screen, session: ChatSession, text: str
) -> Generator[str, None, None]:
    # Unknown characters warn once per turn, as one line, and the turn goes on.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BookgenWarning)
        pieces = session.turn(text)
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
        pieces.close()  # the session keeps what was written so far
        screen.end_turn()
        screen.note("(stopped)")
        return
    screen.end_turn()


def chat_main(
    checkpoint: Path | None = None,
    random_seed: int | None = None,
    settings: SamplingSettings | None = None,
) -> int:
    """`bookgen chat`: a session in the terminal, or line by line from a pipe. Returns 0.

    Raises BookgenError for bad settings or a checkpoint that cannot be loaded.
    """
    writer = load(checkpoint)
    session = ChatSession(writer, settings, random_seed)
    writer.copy_guard(session.settings.max_copy)  # a missing book is said now, not mid-story
    interactive = sys.stdin.isatty()
    if not interactive:
        # stdout carries only the story, so it can be piped on; messages go to stderr.
        return run_chat(session, _read_piped_line, sys.stdout, False, Console(stderr=True))
    console = Console(highlight=False)
    where = writer.checkpoint.path if writer.checkpoint is not None else checkpoint
    banner = f"bookgen chat with {where}: type text and the model continues it; /help for commands"
    console.print(banner, style="bold", markup=False, soft_wrap=True)  # one line, however wide
    return run_chat(session, _terminal_reader(), console, True)


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
