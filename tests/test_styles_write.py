"""Writing in a style, and mixing styles: styles.py's specs, the sampler's three paths (forward,
step kernel, device blocks), `generate(style=)`, `bookgen sample --style`, `bookgen styles`,
chat's /style and /undo.

The styled model is trained here, by hand, on two tiny texts of disjoint alphabets ("ab" and
"xy"), so each style's text can be told apart by its letters alone. (Until training writes styled
checkpoints, the checkpoint is written with `snapshot_checkpoint` and a corpus naming its styles.)
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bookgen
from bookgen import checkpoint, device_sampler
from bookgen.cli import app
from bookgen.errors import BookgenError
from bookgen.interactive import run_chat
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.sampler import SamplingSettings, StepKernel, TextGenerator
from bookgen.story import Story
from bookgen.styles import (
    STYLE_STRENGTH,
    Style,
    describe,
    neutral_weights,
    parse_style,
    strengthen,
    weaken,
)
from bookgen.tokenizer import CharTokenizer
from tests.test_interactive import lines_then_eof

ALPHABET = list("abxy \n")
LETTERS = {"abc": set("ab"), "xyz": set("xy")}
STYLES = [Style("abc", 0.25), Style("xyz", 0.75)]
COOL = dict(temperature=0.5, max_copy=0)
runner = CliRunner()


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def styled_model(cell: str = "lstm", steps: int = 60) -> RecurrentLM:
    """Two styles, learned in `steps` steps of random words: style 0 of a and b, style 1 of x
    and y. Every row starts from its style's learned start and reads its style's vector."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=len(ALPHABET) + 1, cell=cell, layers=1, hidden_size=16, embed_size=8,
        dropout=0.0, styles=2,
    )  # fmt: skip
    model = RecurrentLM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0], [1]]).repeat(1, 4).view(-1)  # (B,) = 8 rows, 4 of each style
    for _ in range(steps):
        tokens = random_words(ids, 24, generator)  # (T + 1, B)
        logits, _ = model(
            tokens[:-1], model.init_state(len(ids), style=ids), style=ids.expand(24, -1)
        )
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def random_styled_model(cell: str) -> RecurrentLM:
    """Untrained, with style starts and vectors that matter."""
    model = styled_model(cell, steps=0)
    with torch.no_grad():
        model.style_starts.normal_(generator=torch.Generator().manual_seed(1))
        model.style_vectors.normal_(generator=torch.Generator().manual_seed(2))
    return model


def random_words(ids: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """(length + 1, B) token ids: per row, letters of its style's pair, a space now and then."""
    letters = torch.randint(0, 2, (length + 1, len(ids)), generator=generator)
    tokens = 1 + letters + 2 * ids  # a, b = 1, 2; x, y = 3, 4 (id 0 is the unknown)
    space = torch.rand(length + 1, len(ids), generator=generator) < 0.25
    return torch.where(space, torch.tensor(5), tokens)


@pytest.fixture(scope="module")
def model() -> RecurrentLM:
    return styled_model()


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory) -> Path:
    """The styled model as a checkpoint whose manifest names its styles, with one evaluation
    that recorded the loss of one style only."""
    out = tmp_path_factory.mktemp("styled") / "model"
    out.mkdir()
    corpus = {"styles": [{"name": s.name, "share": s.share} for s in STYLES], "style_by": "file"}
    snapshot = checkpoint.snapshot_checkpoint(
        model=model, tokenizer=CharTokenizer(ALPHABET), train_config={}, corpus=corpus,
        progress=checkpoint.TrainingProgress(), precision={"precision": "fp32"},
    )  # fmt: skip
    checkpoint.write_checkpoint(out, snapshot)
    record = {"step": 60, "val_loss": 0.9, "val_loss_by_style": {"xyz": 0.7512}}
    checkpoint.append_metrics(out, record)
    return out


def letters_of(text: str) -> set[str]:
    return set(text) - {" ", "\n"}


# --- styles.py: the spec --------------------------------------------------------------------------


def test_a_spec_reads_as_weights_that_sum_to_one():
    assert parse_style("abc", STYLES) == [1.0, 0.0]
    assert parse_style(" xyz ", STYLES) == [0.0, 1.0]
    assert parse_style("abc=0.7, xyz=0.3", STYLES) == pytest.approx([0.7, 0.3])
    assert parse_style("abc=3,xyz=1", STYLES) == pytest.approx([0.75, 0.25])
    assert parse_style("abc,xyz", STYLES) == [0.5, 0.5]
    assert parse_style("xyz=2", STYLES) == [0.0, 1.0]
    assert neutral_weights(STYLES) == [0.25, 0.75]
    assert describe([0.7, 0.3], STYLES) == "abc=0.7,xyz=0.3" and describe([0, 1], STYLES) == "xyz"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("austin", "unknown style 'austin': this model knows abc, xyz"),
        ("abc=0.5,austin=0.5", "unknown style 'austin': this model knows abc, xyz"),
        ("abc=-1,xyz=2", "the weight of abc must be a number of 0 or more, not -1"),
        ("abc=0,xyz=0", "the weights sum to 0"),
        ("abc=1,abc=2", "abc is given twice"),
        ("abc=lots", "the weight of abc is not a number ('lots')"),
        ("abc=nan", "the weight of abc must be a number of 0 or more"),
        ("abc,,xyz", "expected a name"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec, message):
    with pytest.raises(BookgenError) as caught:
        parse_style(spec, STYLES)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_one_style_model_takes_no_style():
    with pytest.raises(BookgenError, match=r"trained on one style \(austen\), so it takes no"):
        parse_style("austen", [], one_style="austen")


# --- the sampler: each style written, the three paths agreeing ----------------------------------


def test_each_style_is_written_when_asked(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    for name, letters in LETTERS.items():
        text = "".join(writer.generate(length=200, style=name, random_seed=1, **COOL))
        assert letters_of(text) == letters, (name, text)


def test_a_prime_then_a_stream_keeps_the_style(model):
    """A Primed carries its style: a seed read in xyz, then text written after it, stays xyz
    (the seed itself is of the other alphabet, so only the style can keep it xyz)."""
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    primed = writer.prime("ab ba", style="xyz")
    settings = SamplingSettings(length=100, **COOL)
    first = "".join(writer.stream(primed, settings, torch.Generator().manual_seed(2)))
    primed = writer.prime(" ", primed)  # more text read: the style stays
    second = "".join(writer.stream(primed, settings, torch.Generator().manual_seed(3)))
    assert letters_of(first + second) == LETTERS["xyz"]
    # A copy writes what the original does (on a model whose style vectors weigh: the one here
    # learned its styles mostly in its starts).
    writer = TextGenerator(random_styled_model("lstm"), CharTokenizer(ALPHABET), styles=STYLES)
    snapshot = writer.prime("ab", style="xyz")
    hot = SamplingSettings(length=100, temperature=1.0, max_copy=0)
    from_copy = "".join(writer.stream(snapshot.copy(), hot, torch.Generator().manual_seed(4)))
    assert from_copy == "".join(writer.stream(snapshot, hot, torch.Generator().manual_seed(4)))


def test_a_mix_of_one_style_is_that_style(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)

    def write(style) -> str:
        return "".join(writer.generate(length=80, style=style, random_seed=4, temperature=1.0))

    pure = write("abc")
    assert pure == write("abc=1.0,xyz=0.0") == write(torch.tensor(strengthen([1.0, 0.0], STYLES)))
    assert write("abc=0.2,xyz=0.8") != pure


def test_no_style_starts_from_the_share_weighted_mix(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)

    def write(style) -> str:
        return "".join(writer.generate(length=80, style=style, random_seed=5, temperature=1.0))

    neutral = write(None)
    assert neutral == write("abc=1,xyz=3") and neutral != write("abc,xyz")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("fold", [True, False])
def test_the_step_kernel_in_a_style_gives_the_forward_paths_logits(cell, fold):
    model = random_styled_model(cell)
    style = torch.tensor([0.3, 0.7])
    tokens = torch.randint(1, len(ALPHABET) + 1, (30,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        start = model.init_state(1, style=style[None])
        full_logits, full_state = model(tokens.view(-1, 1), start, style=style[None])
    kernel = StepKernel(model, fold=fold).styled(model, style)
    slots, state = (kernel.slot(), kernel.slot()), start
    for index, token in enumerate(tokens.tolist()):
        kernel.step(token, state, slots[index % 2])
        state = slots[index % 2].state
        assert torch.allclose(slots[index % 2].logits, full_logits[index, 0], atol=1e-5), index
    for ours, theirs in zip(state, full_state, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_fast_stream_writes_what_the_forward_path_writes_in_a_style(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    settings = SamplingSettings(length=60, temperature=1.0)
    generator = torch.Generator().manual_seed(6)
    style = torch.tensor([0.4, 0.6])
    fast = "".join(writer.generate("ab", length=60, temperature=1.0, random_seed=6, style=style))
    from bookgen.sampler import choose_token

    with torch.no_grad():  # one forward per token through the model itself
        ids = torch.tensor(writer.tokenizer.encode("ab")).view(-1, 1)
        logits, state = model(ids, model.init_state(1, style=style[None]), style=style[None])
        out = []
        for _ in range(settings.length):
            token = choose_token(logits[-1, 0], settings, generator)
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state, style=style[None])
    assert fast == writer.tokenizer.decode(out)


@pytest.mark.parametrize("trained", [True, False])
def test_the_device_blocks_write_in_the_style(model, trained, monkeypatch):
    """device_sampler.py op by op on the CPU: the same text as the CPU sampler from the same
    noise, in each style (the style lives in the kernel the blocks step with): on the trained
    model, each style's letters; on a random one, whose style vectors weigh, the same text."""
    monkeypatch.setattr(device_sampler, "BLOCK", 7)
    model = model if trained else random_styled_model("lstm")
    settings = SamplingSettings(length=40, max_copy=0, temperature=1.0)
    for name in ("abc", "xyz"):
        on_device = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
        on_device.draw_on_device, on_device.capture_graphs = True, False
        primed = on_device.prime("", style=name)
        ours = "".join(on_device.stream(primed, settings, torch.Generator().manual_seed(3)))
        cpu = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
        noise = device_sampler.device_generators(
            torch.Generator().manual_seed(3), torch.device("cpu")
        )
        theirs = "".join(cpu.stream(cpu.prime("", style=name), settings, noise[0]))
        assert ours == theirs, name
        assert letters_of(ours) == LETTERS[name] if trained else len(set(ours)) > 2


def test_a_model_without_styles_refuses_one():
    torch.manual_seed(0)
    plain = RecurrentLM(ModelConfig(vocab_size=len(ALPHABET) + 1, hidden_size=8))
    writer = TextGenerator(plain.eval(), CharTokenizer(ALPHABET))
    assert writer.style_weights() is None
    with pytest.raises(BookgenError, match="one style"):
        writer.generate(style="abc")


# --- from a checkpoint: bookgen.load, the CLI --------------------------------------------------


def test_load_then_generate_in_a_mix(folder):
    writer = bookgen.load(folder)
    assert [s.name for s in writer.styles] == ["abc", "xyz"]

    def write(style) -> str:
        return "".join(writer.generate(length=60, style=style, random_seed=1, max_copy=0))

    strong = torch.tensor(strengthen([0.3, 0.7], writer.styles))  # a spec is strengthened
    assert write("abc=0.3,xyz=0.7") == write(strong) != write("abc")


def test_sample_style_from_the_cli(folder):
    for name, letters in LETTERS.items():
        result = run(
            "sample", "--checkpoint", folder, "--style", name, "--length", "150",
            "--temperature", "0.5", "--max-copy", "0", "--random-seed", "1",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert letters_of(result.stdout) == letters


def test_an_unknown_style_exits_2_with_one_line_listing_the_known(folder):
    result = run("sample", "--checkpoint", folder, "--style", "austin", "--max-copy", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown style 'austin': this model knows abc, xyz"
    assert result.stdout == ""


def test_sample_help_teaches_the_style():
    result = run("sample", "--help", env={"COLUMNS": "200"})
    assert "--style" in result.output and "bookgen styles" in result.output
    assert "[default: the mix" in " ".join(result.output.replace("│", " ").split())


def test_bookgen_styles_lists_shares_and_losses(folder):
    result = run("styles", "--checkpoint", folder, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    cells = [[cell.strip() for cell in line.split("│")] for line in result.stdout.splitlines()]
    rows = [row for row in cells if row[0] in ("abc", "xyz")]
    assert rows == [["abc", "25.0%", "-"], ["xyz", "75.0%", "0.7512"]], result.stdout


def test_bookgen_styles_of_a_one_style_model(tmp_path):
    torch.manual_seed(0)
    plain = RecurrentLM(ModelConfig(vocab_size=len(ALPHABET) + 1, hidden_size=8))
    corpus = {"styles": [{"name": "tiny", "share": 1.0}], "style_by": "file"}
    snapshot = checkpoint.snapshot_checkpoint(
        model=plain, tokenizer=CharTokenizer(ALPHABET), train_config={}, corpus=corpus,
        progress=checkpoint.TrainingProgress(), precision={"precision": "fp32"},
    )  # fmt: skip
    checkpoint.write_checkpoint(tmp_path, snapshot)
    result = run("styles", "--checkpoint", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        ": this model has one style (tiny): it writes in it, and takes no --style\n"
    )
    refused = run("sample", "--checkpoint", tmp_path, "--style", "tiny", "--max-copy", "0")
    assert refused.exit_code == 2 and refused.stdout == ""
    one_line = "error: this model was trained on one style (tiny), so it takes no style"
    assert refused.stderr == one_line + " ('tiny' given)\n"


# --- chat: /style and /undo --------------------------------------------------------------------


def test_chat_style_then_undo_in_the_loop(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    story = Story(writer, SamplingSettings(length=60, **COOL), random_seed=0, style="abc")
    out, messages = io.StringIO(), io.StringIO()
    lines = lines_then_eof("/style xyz", "", "/style austin", "/undo", "/undo", "/style", "")
    assert run_chat(story, lines, out, interactive=False, messages=messages) == 0
    assert messages.getvalue().splitlines() == [
        "style xyz",
        "error: unknown style 'austin': this model knows abc, xyz",  # and the session goes on
        "undone: the story is back to 0 characters",  # the xyz turn
        "undone: the style is back to abc",  # the /style
        "style abc",
    ]
    written = out.getvalue().split("\n")  # each turn's text, from a fresh start
    assert letters_of(written[0]) == LETTERS["xyz"] and letters_of(written[1]) == LETTERS["abc"]
    assert "/style SPEC" in run_help(story)


def run_help(story: Story) -> str:
    out = io.StringIO()
    run_chat(story, lines_then_eof("/help"), out, interactive=False)
    return out.getvalue()


def test_chat_style_rereads_the_story_and_undo_takes_it_back(model):
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    story = Story(writer, SamplingSettings(length=60, **COOL), random_seed=0, style="abc")
    first = "".join(story.turn("a"))
    assert letters_of(first) == LETTERS["abc"]
    before = story.primed.copy()
    story.restyle("xyz")
    # The state is what reading the story from xyz's start gives, not what it was.
    reread = writer.prime(story.text, style="xyz")
    assert torch.allclose(story.primed.logits, reread.logits, atol=1e-6)
    assert not torch.allclose(story.primed.logits, before.logits, atol=1e-3)
    assert "".join(story.turn(" x"))
    story.undo()  # the turn
    with pytest.raises(BookgenError, match="style changed"):
        story.retry()
    story.undo()  # the style
    assert story.text == "a" + first
    assert describe(weaken(story.style.tolist(), STYLES), STYLES) == "abc"
    assert torch.equal(story.primed.logits, before.logits)


# --- eval: a text read in a style ---------------------------------------------------------------


def test_eval_reads_a_text_in_the_style_asked_for_and_by_default_in_the_neutral_mix(
    folder, tmp_path
):
    import json

    text = tmp_path / "ab.txt"
    text.write_text("ab ba abba baab ab ba " * 20)

    def nats(*style):
        result = run("eval", "--checkpoint", folder, text, "--json", *style)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["nats_per_token"]

    own, other = nats("--style", "abc"), nats("--style", "xyz")
    assert own < other - 0.5  # the ab text is far likelier read as the ab style
    assert nats() == pytest.approx(nats("--style", "abc=0.25,xyz=0.75"), abs=1e-6)
    assert nats() != pytest.approx(own, abs=1e-3)
    # --adapt reads the text as one stream, in the style asked for too.
    adapted = {
        name: json.loads(
            run("eval", "--checkpoint", folder, text, "--json", "--adapt", "--style", name).stdout
        )
        for name in ("abc", "xyz")
    }
    assert adapted["abc"]["nats_per_token"] < adapted["xyz"]["nats_per_token"] - 0.2
    refused = run("eval", "--checkpoint", folder, text, "--style", "qq")
    assert refused.exit_code == 2
    assert "unknown style 'qq': this model knows abc, xyz" in refused.output


def test_a_style_by_name_is_pushed_away_from_the_neutral_mix(model):
    """neutral + STYLE_STRENGTH * (asked - neutral): still summing to 1; weights given as a tensor
    are used as they are; the chat banner's description undoes it."""
    writer = TextGenerator(model, CharTokenizer(ALPHABET), styles=STYLES)
    assert STYLE_STRENGTH == 2.0
    assert writer.style_weights("abc").tolist() == pytest.approx([1.75, -0.75])
    assert writer.style_weights("abc=0.25,xyz=0.75").tolist() == pytest.approx([0.25, 0.75])
    assert writer.style_weights(None).tolist() == pytest.approx([0.25, 0.75])
    assert writer.style_weights(torch.tensor([1.0, 0.0])).tolist() == [1.0, 0.0]
    assert describe(weaken([1.75, -0.75], STYLES), STYLES) == "abc"
    three = [Style("a", 0.5), Style("b", 0.3), Style("c", 0.2)]
    assert describe(weaken(strengthen([0.0, 1.0, 0.0], three), three), three) == "b"
