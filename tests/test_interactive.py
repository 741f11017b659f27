from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pexpect
import pytest
import torch

import bookgen
from bookgen.errors import BookgenError
from bookgen.interactive import PROMPT, EndSession, command, run_chat, typed_text
from bookgen.sampler import SamplingSettings, make_generator
from bookgen.story import Story
from tests.conftest import TINY_BOOK, TINY_MODEL

# Drawn at temperature 1 with reproduced draws, the text shows small differences of state that
# greedy text can hide.
LENGTH = 40
HOT = SamplingSettings(temperature=1.0, length=LENGTH)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny model on the tiny book, trained once for this module (tests only read it).

    Longer than conftest's `trained` (40 steps), which has not yet learned to use its state:
    its text is the same whatever it read before, so it could not tell a carried state from a
    lost one. After 400 steps it continues "It was" with " the epoch of ..." (about 0.5 s).
    """
    folder = tmp_path_factory.mktemp("chat")
    book = folder / "tiny.txt"
    book.write_text(TINY_BOOK, encoding="utf-8")
    options = {**TINY_MODEL, "learning_rate": 1e-2}
    bookgen.train(book, folder / "model", steps=400, eval_every=400, **options)
    return folder / "model"


@pytest.fixture
def writer(model_folder: Path):
    return bookgen.load(model_folder)


def new_story(writer, random_seed: int = 0, **settings) -> Story:
    settings = {"temperature": 1.0, "length": LENGTH, **settings}
    return Story(writer, SamplingSettings(**settings), random_seed=random_seed)


def say(story: Story, text: str) -> str:
    return "".join(story.turn(text))


def draw(writer, primed, random_seed: int, length: int = LENGTH) -> str:
    settings = SamplingSettings(temperature=1.0, length=length)
    return "".join(writer.stream(primed, settings, make_generator(random_seed)))


def same_state(a, b) -> bool:
    pairs = [*zip(a.state, b.state, strict=True), (a.logits, b.logits)]
    return all(torch.allclose(x, y, atol=1e-5) for x, y in pairs)


def lines_then_eof(*lines: str):
    queue = list(lines)

    def read_line(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read_line


# --- the story -------------------------------------------------------------------------------


def test_carrying_the_state_equals_rereading_the_history(writer):
    story = new_story(writer, random_seed=3)
    first = say(story, "It was")
    second = say(story, " the age")

    # One plain run that reads the whole history, drawing with the same generator.
    generator = make_generator(3)
    primed = writer.prime("It was")
    assert "".join(writer.stream(primed, HOT, generator)) == first
    primed = writer.prime("It was" + first + " the age")
    assert "".join(writer.stream(primed, HOT, generator)) == second

    assert story.text == "It was" + first + " the age" + second
    assert story.transcript == [
        ("user", "It was"),
        ("model", first),
        ("user", " the age"),
        ("model", second),
    ]
    assert same_state(story.primed, writer.prime(story.text))


def test_an_empty_turn_lets_the_model_go_on(writer):
    story = new_story(writer, random_seed=4)
    first = say(story, "It was")
    more = say(story, "")
    generator = make_generator(4)
    primed = writer.prime("It was")
    assert (
        "".join(writer.stream(primed, replace(HOT, length=2 * LENGTH), generator)) == first + more
    )


def test_undo_restores_the_story_as_if_the_turn_never_happened(writer):
    undone = new_story(writer)
    say(undone, "It was")
    say(undone, " the worst")
    assert command(undone, "/undo").startswith("undone")
    undone.generator = make_generator(7)
    after_undo = say(undone, " the age")

    never = new_story(writer)
    say(never, "It was")
    never.generator = make_generator(7)
    assert after_undo == say(never, " the age")
    assert undone.transcript == never.transcript
    assert same_state(undone.primed, never.primed)

    # Control: the undone turn does change what comes next.
    kept = new_story(writer)
    say(kept, "It was")
    say(kept, " the worst")
    kept.generator = make_generator(7)
    assert say(kept, " the age") != after_undo

    undone.undo()
    undone.undo()
    assert undone.transcript == [] and undone.primed is None
    with pytest.raises(BookgenError, match="nothing to undo"):
        command(undone, "/undo")


def test_retry_draws_again_from_the_state_after_the_users_text(writer):
    story = new_story(writer)
    first = say(story, "It was")
    second = "".join(command(story, "/retry"))
    assert second != first
    assert story.transcript == [("user", "It was"), ("model", second)]

    story.generator = make_generator(5)
    third = "".join(story.retry())
    assert third == draw(writer, writer.prime("It was"), random_seed=5)
    assert story.text == "It was" + third
    assert same_state(story.primed, writer.prime(story.text))


def test_reset_starts_from_a_fresh_state(writer):
    story = new_story(writer, random_seed=1)
    say(story, "it was the season of Light")
    assert command(story, "/reset").startswith("reset")
    assert story.transcript == [] and story.primed is None
    story.generator = make_generator(2)
    assert say(story, "It was") == say(new_story(writer, random_seed=2), "It was")


@pytest.mark.parametrize("stop", ["consumer closes", "sampler raises", "next turn begins"])
def test_a_stopped_turn_keeps_what_was_written_and_a_matching_state(writer, monkeypatch, stop):
    if stop == "sampler raises":
        stream = writer.stream

        def interrupted(primed, settings, generator):
            for count, piece in enumerate(stream(primed, settings, generator), 1):
                yield piece
                if count == 5:
                    raise KeyboardInterrupt  # as if Ctrl-C came while the model computed

        monkeypatch.setattr(writer, "stream", interrupted)
    story = new_story(writer)
    pieces = story.turn("It was")
    shown = "".join(next(pieces) for _ in range(5))
    if stop == "consumer closes":
        pieces.close()
    elif stop == "sampler raises":
        with pytest.raises(KeyboardInterrupt):
            next(pieces)
    monkeypatch.undo()
    story.generator = make_generator(9)
    following = story.turn(" and")  # "next turn begins": this closes the first one
    assert story.transcript == [("user", "It was"), ("model", shown), ("user", " and")]
    # The state is the state after the text that was shown, so the story goes on from there.
    assert same_state(story.primed, writer.prime("It was" + shown + " and"))
    assert "".join(following) == draw(writer, writer.prime("It was" + shown + " and"), 9)


@pytest.mark.parametrize(
    "line, shown, field, value",
    [
        ("/temperature 0.5", "temperature 0.5", "temperature", 0.5),
        ("/top-k 40", "top-k 40", "top_k", 40),
        ("/top-p 0.9", "top-p 0.9", "top_p", 0.9),
        ("/length 12", "length 12", "length", 12),
        ("/length   0 ", "length 0", "length", 0),
        ("/temperature", "temperature 1", "temperature", 1.0),
    ],
)
def test_settings_commands_acknowledge_the_new_value(writer, line, shown, field, value):
    story = new_story(writer)
    assert command(story, line) == shown
    assert getattr(story.settings, field) == value


@pytest.mark.parametrize(
    "line",
    ["/temperature -1", "/temperature nan", "/top-p 2", "/top-k 0.5", "/length x", "/foo", "/save"]
    + ["/retry", "/undo"],
)
def test_bad_commands_raise_one_line_and_change_nothing(writer, line):
    story = new_story(writer)
    with pytest.raises(BookgenError) as error:
        command(story, line)
    assert "\n" not in str(error.value)
    assert story.settings == HOT


def test_save_writes_the_story_exactly(writer, tmp_path):
    story = new_story(writer)
    first = say(story, "It was")
    second = say(story, "\nIt was the age")
    path = tmp_path / "stories" / "story.txt"
    assert str(path) in command(story, f"/save {path}")
    assert path.read_bytes().decode("utf-8") == "It was" + first + "\nIt was the age" + second
    with pytest.raises(EndSession):
        command(story, "/quit")


def test_typed_text_escapes():
    assert typed_text("It was") == "It was"
    assert typed_text(r"\n'Who?' he said") == "\n'Who?' he said"
    assert typed_text("//etc") == "/etc"


# --- the loop --------------------------------------------------------------------------------


def test_run_chat_prints_the_story_and_acknowledgements(writer):
    story = new_story(writer)
    out, messages = io.StringIO(), io.StringIO()
    read_line = lines_then_eof("It was", "/temperature 0.5", "", r" and\n§")
    assert run_chat(story, read_line, out, interactive=False, messages=messages) == 0
    (_, user1), (_, model1), (_, user2), (_, model2), (_, user3), (_, model3) = story.transcript
    assert (user1, user2, user3) == ("It was", "", " and\n§")
    assert story.settings.temperature == 0.5
    assert out.getvalue() == f"It was{model1}\n{model2}\n and\n§{model3}\n"
    assert messages.getvalue() == (
        "temperature 0.5\nwarning: not in the model's vocabulary, read as unknown: '§'\n"
    )


def test_bad_values_give_one_line_and_the_session_goes_on(writer):
    story = new_story(writer)
    out, messages = io.StringIO(), io.StringIO()
    lines = lines_then_eof("/temperature -1", "/top-p 2", "/length x", "/foo", "It was")
    assert run_chat(story, lines, out, interactive=False, messages=messages) == 0
    errors = messages.getvalue().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert story.settings == HOT
    assert out.getvalue() == story.text + "\n" and len(story.text) > len("It was")


def test_quit_and_ctrl_c_at_the_prompt_end_the_session_with_0(writer):
    out = io.StringIO()
    assert run_chat(new_story(writer), lines_then_eof("/quit", "It was"), out, False) == 0
    assert out.getvalue() == ""

    def ctrl_c(prompt: str) -> str:
        raise KeyboardInterrupt

    assert run_chat(new_story(writer), ctrl_c, out, False) == 0


def test_ctrl_c_while_the_model_reads_changes_nothing(writer, monkeypatch):
    story = new_story(writer)
    say(story, "It was")
    prime = writer.prime

    def ctrl_c_once(text, primed=None):
        monkeypatch.setattr(writer, "prime", prime)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "prime", ctrl_c_once)
    out, messages = io.StringIO(), io.StringIO()
    lines = lines_then_eof(" a long text", "/undo")
    assert run_chat(story, lines, out, interactive=False, messages=messages) == 0
    # The stopped turn left no trace: /undo takes back the turn before it.
    assert messages.getvalue() == "(stopped)\nundone: the story is back to 0 characters\n"
    assert out.getvalue() == "" and story.transcript == []


class CtrlCAfterWrites(io.StringIO):
    """A terminal where Ctrl-C comes right after the n-th write."""

    def __init__(self, writes: int) -> None:
        super().__init__()
        self.left = writes
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        count = super().write(text)
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        return count


def test_ctrl_c_while_writing_stops_the_turn_and_the_session_goes_on(writer):
    story = new_story(writer)
    out, messages = CtrlCAfterWrites(5), io.StringIO()
    # interactive: the user's text is on screen already, so each write is one piece.
    assert run_chat(story, lines_then_eof("It was", " and"), out, True, messages) == 0
    assert messages.getvalue() == "(stopped)\n"
    stopped, finished = story.transcript[1][1], story.transcript[3][1]
    assert stopped == "".join(out.writes[:5])
    assert story.transcript[2] == ("user", " and") and len(finished) > len(stopped)
    assert out.getvalue() == f"{stopped}\n{finished}\n\n"
    assert same_state(story.primed, writer.prime(story.text))


# --- real processes --------------------------------------------------------------------------

CHAT = (
    "import sys; from bookgen.interactive import chat_main; "
    "from bookgen.sampler import SamplingSettings; "
    "sys.exit(chat_main(sys.argv[1], 0, SamplingSettings(length=int(sys.argv[2]))))"
)


def test_piped_stdin_prints_continuations_and_exits_0(model_folder, writer):
    result = subprocess.run(
        [sys.executable, "-c", CHAT, str(model_folder), str(LENGTH)],
        input="/temperature 0\nIt was\n/quit\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    greedy = "".join(writer.generate("It was", LENGTH, temperature=0))
    assert result.stdout == f"It was{greedy}\n"
    assert result.stderr == "temperature 0\n"


def spawn_chat(model_folder: Path, length: int) -> pexpect.spawn:
    # A colour terminal, whatever the environment running the tests says about its own.
    unset = {"NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES"}
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(
        sys.executable,
        ["-c", CHAT, str(model_folder), str(length)],
        env=env,
        encoding="utf-8",
        timeout=20,
        dimensions=(24, 100),
        # A terminal's program starts with Ctrl-C at its default. An ignored SIGINT is inherited
        # across exec, and a pytest-xdist worker was seen with SIGINT ignored after other tests
        # (cause not found yet): the child then never stopped.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_a_session_in_a_terminal(model_folder):
    child = spawn_chat(model_folder, LENGTH)
    child.expect_exact("/help for commands")
    child.expect_exact(PROMPT)
    child.sendline("It was")
    child.expect_exact(PROMPT)
    assert "\x1b[36m" in child.before  # the model's text is cyan
    child.sendline("/temperature 0.5")
    child.expect_exact("temperature 0.5")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_in_a_terminal_stops_writing_then_ends_at_an_empty_prompt(model_folder):
    child = spawn_chat(model_folder, 10**7)
    child.expect_exact(PROMPT)
    child.sendline("It was")
    child.expect(r"\x1b\[36m.{20}")  # writing has begun
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact(PROMPT)
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
