"""A story written with the model in turns: the library object behind `bookgen chat`.

The story is stateful. The model reads each turn's new text once, starting from its hidden
state after everything before, so a long story costs no more per turn than a short one:

    turn 1:  fresh state --read "It was"--> s1 --write " the best of"--> s2
    turn 2:  s2 --read " times"--> s3 --write ", it was"--> s4        (never re-reads turn 1)

Every turn keeps two snapshots: the state before it (for `undo`) and the state after the
user's text (for `retry`).

A model trained on several styles writes the story in `style` (mixing weights, sampler.py). A
style's learned start matters only at the story's beginning, so a change of style (`restyle`)
reads the story so far again from the new style's start: the state is then the one the model
would have reached writing in that style. A change of style is a step of its own, which `undo`
takes back. What a person types and sees (slash commands, help, the terminal)
is interactive.py's; here are only the text, the state and the settings.

Adapting (`adapt=AdaptSettings()`, `bookgen chat --adapt`): the model learns from the story as
it is written (dynamic evaluation, adapt.py). Once per turn, the text added since the last time
(the model's last continuation and the user's new text) is read again from the state before it,
in segments, a gradient step after each; the state after that reading is the one the model
writes from. The writer's weights move in place; `reset` puts the trained ones back, and the
checkpoint on disk is never changed.

    turn 2:  a1 --adapt on " the best of" + " times"--> s3' (weights th1 -> th2) --write--> ...
             (a1: the state after turn 1's user text, where adapting stopped)

`undo` restores the weights as they were before the turn: each turn's snapshot holds a copy of
what adapting changes, the weights and the rms rule's mean squares, twice the model's fp32 size
(a 2 x 512 character LSTM, 4.2 million weights: 32 MiB a turn). So that a long story does not
fill the memory, only the last ADAPT_UNDO turns can be undone with adapting on.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import torch

from bookgen.adapt import AdaptedWeights, Adapter
from bookgen.errors import BookgenError
from bookgen.files import atomic_write
from bookgen.sampler import Primed, SamplingSettings, TextGenerator, make_generator
from bookgen.settings import AdaptSettings

# Turns that /undo can take back while adapting: each holds a copy of the weights (see above;
# 10 turns of a 2 x 512 model: 320 MiB).
ADAPT_UNDO = 10


@dataclass
class Snapshot:
    """What one turn changed, so it can be taken back (undo) or written again (retry)."""

    before: Primed | None  # the state before the user's text (None: fresh)
    transcript_length: int  # transcript entries before the turn
    after_user: Primed | None  # the state after the user's text (None: a change of style)
    style: torch.Tensor | None  # the style before the turn
    # Adapting: the weights before the turn (None: the step did not change them), and where
    # adapting stood (the state after the text learned from so far, and the transcript entries
    # that text covers).
    weights: AdaptedWeights | None = None
    adapt_point: Primed | None = None
    adapt_length: int = 0


class Story:
    """The text so far, the model's state after it, and the settings it is written with."""

    def __init__(
        self,
        writer: TextGenerator,
        settings: SamplingSettings | None = None,
        random_seed: int | None = None,
        style: str | None = None,
        adapt: AdaptSettings | None = None,
    ) -> None:
        self.writer = writer
        # Adapting moves the writer's own weights (in place): give a Story a writer of its own.
        self.adapter: Adapter | None = Adapter(writer.model, adapt) if adapt is not None else None
        self._adapt_point: Primed | None = None  # the state after the text learned from so far
        self._adapt_length = 0  # the transcript entries learned from
        # (S,) mixing weights: `style`, or the neutral mix (None for a model without styles).
        self.style: torch.Tensor | None = writer.style_weights(style)
        self.use(settings or SamplingSettings())  # `length` is per turn
        self.generator: torch.Generator = make_generator(random_seed)
        self.primed: Primed | None = None  # None: the model has read nothing yet
        self.snapshots: list[Snapshot] = []  # one per turn, oldest first
        self.transcript: list[tuple[str, str]] = []  # ("user" | "model", text), in story order
        self._writing: Generator[str, None, None] | None = None  # the continuation being read

    @property
    def text(self) -> str:
        """The story so far: the user's text as given to `turn`, the model's as written."""
        return "".join(text for _, text in self.transcript)

    def use(self, settings: SamplingSettings) -> None:
        """Write from now on with `settings`. Their copy guard is set up now (its index built
        if need be), so a book that cannot be had is said now, not in the middle of a turn."""
        self.writer.copy_guard(settings.max_copy)
        self.settings = settings

    def turn(self, user_text: str) -> Generator[str, None, None]:
        """Read `user_text` (now), then return the continuation, to be drawn piece by piece.

        An empty `user_text` lets the model go on from where it stands. A continuation still
        being read is closed first, keeping what was read of it (as in retry, undo, reset, save).
        """
        self._stop_writing()
        before = self.primed.copy() if self.primed is not None else None
        weights = self.adapter.snapshot() if self.adapter is not None else None
        try:
            after_user = self._read_turn(user_text).copy()
        except BaseException:  # a Ctrl-C while adapting: the weights as they were
            if weights is not None:
                self.adapter.restore(weights)
            raise
        snapshot = Snapshot(
            before,
            len(self.transcript),
            after_user,
            self.style,
            weights,
            self._adapt_point,
            self._adapt_length,
        )
        # Only now, with the text read, does anything change (a Ctrl-C above changes nothing).
        self._push(snapshot)
        self.transcript.append(("user", user_text))
        if self.adapter is not None:  # learned from up to here
            self._adapt_point, self._adapt_length = after_user, len(self.transcript)
        return self._write_from(snapshot.after_user)

    def retry(self) -> Generator[str, None, None]:
        """Drop the last continuation and draw a new one from the same state."""
        if not self.snapshots:
            raise BookgenError("nothing to retry yet")
        snapshot = self.snapshots[-1]
        if snapshot.after_user is None:
            raise BookgenError("the style changed after the last continuation: /undo takes it back")
        self._stop_writing()
        del self.transcript[snapshot.transcript_length + 1 :]  # keep the user's text
        return self._write_from(snapshot.after_user)

    def undo(self) -> None:
        """Take back the last turn: the state, the text (and, adapting, the weights) are as they
        were before it."""
        if not self.snapshots:
            if self.adapter is not None and self.transcript:
                raise BookgenError(
                    f"nothing more to undo: while adapting, /undo goes back {ADAPT_UNDO} turns "
                    "at most (/reset starts afresh)"
                )
            raise BookgenError("nothing to undo")
        self._stop_writing()
        snapshot = self.snapshots.pop()
        del self.transcript[snapshot.transcript_length :]
        self.primed = snapshot.before.copy() if snapshot.before is not None else None
        self.style = snapshot.style
        if self.adapter is not None:
            if snapshot.weights is not None:
                self.adapter.restore(snapshot.weights)
            self._adapt_point, self._adapt_length = snapshot.adapt_point, snapshot.adapt_length

    def restyle(self, style: str | torch.Tensor | None) -> None:
        """Write from now on in `style` (a spec, weights, or None: the neutral mix; see
        `TextGenerator.style_weights`), the story so far read again from its start. Raises
        BookgenError (one line, nothing changed) for a style the model does not know."""
        weights = self.writer.style_weights(style)
        self._stop_writing()
        reread = (
            self.writer.prime(self.text, None, style=weights) if self.primed is not None else None
        )
        # Only now, with the story read again, does anything change (as in `turn`).
        before = Snapshot(
            self.primed,
            len(self.transcript),
            after_user=None,
            style=self.style,
            adapt_point=self._adapt_point,
            adapt_length=self._adapt_length,
        )
        self._push(before)
        self.style, self.primed = weights, reread
        if self.adapter is not None:
            # The story is read again with the weights as they stand, not learned from again
            # (the last continuation, not yet learned from, never will be).
            self._adapt_point, self._adapt_length = reread, len(self.transcript)

    def reset(self) -> None:
        """Start a new story: the model forgets everything, as in a new session."""
        self._stop_writing()
        self.primed = None
        self.snapshots.clear()
        self.transcript.clear()
        if self.adapter is not None:  # and the trained weights
            self.adapter.reset()
            self._adapt_point, self._adapt_length = None, 0

    def save(self, path: str | Path) -> Path:
        """Write the story so far to `path` (UTF-8, exactly as `text`); returns the path."""
        self._stop_writing()
        path = Path(path).expanduser()
        atomic_write(path, self.text.encode("utf-8"))
        return path

    def _push(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        if self.adapter is not None and len(self.snapshots) > ADAPT_UNDO:
            del self.snapshots[0]  # its copy of the weights with it

    def _read_turn(self, user_text: str) -> Primed:
        """The state after `user_text`; adapting, learning from the text added since the last
        turn (the model's continuation and `user_text`), read again from where adapting
        stopped."""
        added = "".join(text for _, text in self.transcript[self._adapt_length :]) + user_text
        if self.adapter is None or not added:
            return self._read(user_text)
        start = self._adapt_point
        if start is None:  # a fresh story, in its style
            return self.writer.read_adapting(added, self.adapter, None, style=self.style)
        primed = self.writer.read_adapting(added, self.adapter, start.copy())
        if not user_text and self.primed is not None:  # the model goes on: still its own text
            primed.copy_run = self.primed.copy_run
        return primed

    def _read(self, text: str) -> Primed:
        # A fresh story starts in its style; once started, the state carries the style on.
        if self.primed is None and self.style is not None:
            return self.writer.prime(text, None, style=self.style)
        return self.writer.prime(text, self.primed)

    def _stop_writing(self) -> None:
        if self._writing is not None:
            self._writing.close()
            self._writing = None

    def _write_from(self, start: Primed) -> Generator[str, None, None]:
        # The continuation advances self.primed in place: `start` stays a snapshot.
        self.primed = start.copy()
        self._writing = self._continue(start)
        return self._writing

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
                # The state must be the state after the text shown, still counted as the
                # model's own by the copy guard.
                self.primed = self.writer.prime_written(text, start.copy(), self.settings.max_copy)
