"""Measured precision: the choice, its cache, its record in the checkpoint, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bookgen
from bookgen import cache, context
from bookgen.checkpoint import read_manifest, read_metrics
from bookgen.context import PrecisionChoice, bf16_runs, choose_precision
from bookgen.errors import BookgenError, BookgenWarning
from bookgen.events import Started, TrainingInterrupted
from tests.conftest import TINY_MODEL
from tests.test_reliability import EXACT_FIELDS, interrupt_at

CPU = torch.device("cpu")
AUTO = {k: v for k, v in TINY_MODEL.items() if k != "precision"}  # the default path


class FakeSteps:
    """A probe whose steps take a set time per precision (or fail), counting its calls."""

    def __init__(self, seconds: dict[str, float | None]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, precision: str) -> None:
        self.calls.append(precision)
        if self.seconds[precision] is None:
            raise RuntimeError("could not create a primitive descriptor")
        context.time.sleep(self.seconds[precision])


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path) -> Path:
    """Each test measures into a precision cache of its own. The session's cache is shared, and
    its keys leave out what does not change the speed (dropout, the books): a test there could
    read a choice another test measured, or faked, and never measure."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def bf16_everywhere(monkeypatch):
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: True)
    monkeypatch.setattr(context, "PROBE_SECONDS", 0.02)


def choose(probe, key="k", requested="auto") -> PrecisionChoice:
    return choose_precision(requested, CPU, "lstm", probe, 1000, key)


@pytest.mark.parametrize(
    "seconds, expected",
    [
        ({"fp32": 0.002, "bf16": 0.004}, "fp32"),  # bf16 has the instructions but is slower
        ({"fp32": 0.004, "bf16": 0.002}, "bf16"),
        ({"fp32": 0.004, "bf16": None}, "fp32"),  # bf16 does not run at all
    ],
)
def test_auto_keeps_the_precision_that_measures_faster(bf16_everywhere, seconds, expected):
    choice = choose(FakeSteps(seconds))
    assert choice.precision == expected and choice.how == "measured"
    assert choice.tokens_per_s["fp32"] == pytest.approx(1000 / seconds["fp32"], rel=0.5)
    if seconds["bf16"] is None:
        assert choice.tokens_per_s["bf16"] is None
        assert "bf16 does not run here" in choice.describe()


def test_bf16_must_win_by_a_margin(bf16_everywhere, monkeypatch):
    # Within the probe's noise, the more exact fp32 stays.
    monkeypatch.setattr(context, "time_training", lambda d, p, precision, t: {"fp32": 100.0,
                        "bf16": 105.0}[precision])  # fmt: skip
    assert choose(FakeSteps({})).precision == "fp32"
    monkeypatch.setattr(context, "time_training", lambda d, p, precision, t: {"fp32": 100.0,
                        "bf16": 115.0}[precision])  # fmt: skip
    assert choose(FakeSteps({}), key="other").precision == "bf16"


def test_the_choice_is_cached_per_machine_and_shape(bf16_everywhere, monkeypatch, tmp_path):
    probe = FakeSteps({"fp32": 0.004, "bf16": 0.002})
    first = choose(probe, key="shape A")
    calls = len(probe.calls)
    again = choose(probe, key="shape A")
    assert len(probe.calls) == calls  # nothing measured again
    assert (again.precision, again.how, again.tokens_per_s) == (
        "bf16",
        "cached",
        first.tokens_per_s,
    )
    choose(probe, key="shape B")
    assert len(probe.calls) > calls
    # The cache lives in the cache folder: another folder has measured nothing yet.
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "another cache"))
    calls = len(probe.calls)
    assert choose(probe, key="shape A").how == "measured" and len(probe.calls) > calls


def test_a_damaged_cache_is_measured_again(bf16_everywhere):
    (cache.cache_dir() / "precision.json").parent.mkdir(parents=True, exist_ok=True)
    (cache.cache_dir() / "precision.json").write_text("{not json")
    probe = FakeSteps({"fp32": 0.002, "bf16": 0.004})
    assert choose(probe, key="after damage").how == "measured"
    assert json.loads((cache.cache_dir() / "precision.json").read_text())["after damage"]


def test_the_start_line_says_what_was_chosen_and_why():
    choice = PrecisionChoice("fp32", "measured", {"fp32": 15012.0, "bf16": 9254.0})
    assert choice.describe() == "fp32 (measured: 15.0k tok/s; bf16 9.3k)"
    assert PrecisionChoice("bf16", "asked").describe() == "bf16 (asked)"


def test_asking_for_bf16_where_it_does_not_run_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: False)
    with pytest.raises(BookgenError, match="bf16 autocast does not run for LSTM on this cpu"):
        choose(FakeSteps({}), requested="bf16")


def test_where_bf16_does_not_run_auto_takes_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: False)
    probe = FakeSteps({"fp32": 0.001, "bf16": 0.001})
    choice = choose(probe)
    assert (choice.precision, probe.calls) == ("fp32", [])
    assert choice.describe() == "fp32 (bf16 does not run here)"


def test_asking_whether_bf16_runs_leaves_the_random_stream_alone(monkeypatch):
    bf16_runs.cache_clear()
    torch.manual_seed(5)
    bf16_runs("cpu", "lstm")
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))


def test_auto_trains_the_very_run_its_choice_would(tiny_book: Path, tmp_path: Path, monkeypatch):
    # Measuring must not perturb the run: auto where it picks fp32 equals --precision fp32.
    # The real probe runs (real steps of a copy of the model); only its verdict is fixed.
    real_time_steps = context.time_training

    def fp32_wins(device, probe, precision, tokens):
        real_time_steps(device, probe, precision, tokens)
        return {"fp32": 100.0, "bf16": 50.0}[precision]

    monkeypatch.setattr(context, "time_training", fp32_wins)
    monkeypatch.setattr(context, "PROBE_SECONDS", 0.02)
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: True)
    options = dict(TINY_MODEL, steps=30, eval_every=15, dropout=0.2)
    bookgen.train(tiny_book, tmp_path / "fp32", **options)
    bookgen.train(tiny_book, tmp_path / "auto", **{**options, "precision": "auto"})
    assert read_manifest(tmp_path / "auto")["precision"]["how"] == "measured"

    def exact(folder):
        return [{k: r[k] for k in EXACT_FIELDS} for r in read_metrics(folder)]

    assert exact(tmp_path / "auto") == exact(tmp_path / "fp32")


def test_the_default_measures_records_and_reuses_the_choice(
    tiny_book: Path, tmp_path: Path, monkeypatch
):
    # The real probe on the real model: where bf16 has no kernel its steps fail and it is
    # recorded as not running; elsewhere both are timed. The cache folder is this test's own
    # (own_cache), so the first run must measure and the second must not.
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: True)
    monkeypatch.setattr(context, "PROBE_SECONDS", 0.02)
    events = []
    bookgen.train(tiny_book, tmp_path / "a", steps=5, on_event=events.append, **AUTO)
    saved = read_manifest(tmp_path / "a")["precision"]
    assert saved["how"] == "measured" and saved["tokens_per_s"]["fp32"] > 0
    started = next(e for e in events if isinstance(e, Started))
    assert started.precision == saved["precision"]
    assert started.precision_note.startswith(f"{saved['precision']} (measured: ")
    # The same machine and shape: the next run takes the cached choice, at no cost.

    def no_measuring(*args, **kwargs):
        raise AssertionError("the choice is cached: nothing to measure")

    monkeypatch.setattr(context, "measure_speeds", no_measuring)
    bookgen.train(tiny_book, tmp_path / "b", steps=5, **AUTO)
    cached = read_manifest(tmp_path / "b")["precision"]
    assert cached == {**saved, "how": "cached"}
    assert bookgen.load(tmp_path / "b").context.precision == saved["precision"]


def test_resume_keeps_the_saved_precision_without_measuring(tiny_book, tmp_path, monkeypatch):
    out = tmp_path / "r"
    with pytest.raises(TrainingInterrupted):
        bookgen.train(tiny_book, out, steps=20, on_event=interrupt_at(10), **AUTO)
    saved = read_manifest(out)["precision"]["precision"]

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resumed run must not measure")

    monkeypatch.setattr(context, "measure_speeds", no_measuring)
    # Not even from the cache: an empty one, where a lookup would find nothing and measure.
    monkeypatch.setenv("BOOKGEN_CACHE_DIR", str(tmp_path / "empty cache"))
    bookgen.train(tiny_book, out, resume=True)
    manifest = read_manifest(out)
    assert manifest["precision"]["precision"] == saved and manifest["precision"]["how"] == "saved"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_bf16_model_is_read_in_fp32_where_bf16_does_not_run(
    tiny_book: Path, tmp_path: Path, monkeypatch, cell: str
):
    # A checkpoint trained in fp32 and then marked bf16 is the same weights either way: read in
    # fp32 where bf16 does not run, it must write exactly what the fp32 checkpoint writes (CPU
    # fp32 is deterministic). Where bf16 does run (here GRU, on many CPUs both), reading it in
    # bf16 would change the logits; where it does not, it would fail.
    folder = tmp_path / "model"
    bookgen.train(tiny_book, folder, steps=20, eval_every=20, **dict(TINY_MODEL, cell=cell))
    fp32 = bookgen.load(folder)
    assert fp32.context.precision == "fp32"
    expected_logits = fp32.prime("It was the age of").logits
    expected_text = "".join(fp32.generate("It was", length=40, random_seed=1))
    manifest = read_manifest(folder)
    manifest["precision"] = {"precision": "bf16", "how": "measured", "tokens_per_s": {}}
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(context, "bf16_runs", lambda device_type, cell: False)
    warning = (
        f"trained in bf16, which does not run for {cell.upper()} on this cpu; reading it in fp32"
    )
    with pytest.warns(BookgenWarning, match=warning):
        writer = bookgen.load(folder)
    assert writer.context.precision == "fp32"
    assert torch.equal(writer.prime("It was the age of").logits, expected_logits)
    assert "".join(writer.generate("It was", length=40, random_seed=1)) == expected_text


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_bf16_run_resumes_bit_for_bit(tiny_book: Path, tmp_path: Path, cell: str):
    if not bf16_runs("cpu", cell):
        pytest.skip(f"bf16 autocast does not run for {cell.upper()} on this CPU (no oneDNN kernel)")
    run = dict(TINY_MODEL, cell=cell, precision="bf16", steps=40, eval_every=20, dropout=0.1)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    bookgen.train(tiny_book, straight, **run)
    with pytest.raises(TrainingInterrupted):
        bookgen.train(tiny_book, resumed, on_event=interrupt_at(25), **run)
    bookgen.train(tiny_book, resumed, resume=True)

    def exact(folder):
        return [{k: r[k] for k in EXACT_FIELDS} for r in read_metrics(folder)]

    assert exact(resumed) == exact(straight) and len(exact(straight)) == 2
    assert read_manifest(resumed)["precision"]["precision"] == "bf16"
    writers = [bookgen.load(folder) for folder in (straight, resumed)]
    assert all(w.context.precision == "bf16" for w in writers)
    a, b = ("".join(w.generate("It was", length=60, random_seed=4)) for w in writers)
    assert a == b


def _probe_setup(cell: str = "lstm"):
    import numpy as np

    from bookgen.model import ModelConfig, RecurrentLM
    from bookgen.settings import TrainConfig
    from bookgen.streams import StreamBatcher, TokenStream

    torch.manual_seed(3)
    config = ModelConfig(vocab_size=20, cell=cell, layers=2, hidden_size=16, weight_drop=0.3)
    model = RecurrentLM(config)
    tokens = np.arange(400, dtype=np.uint8) % 20
    stream = TokenStream(tokens, np.array([0]), chars=400)
    return model, TrainConfig(steps=1), StreamBatcher(stream, 4, 8)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_probe_times_a_packed_copy_and_leaves_the_run_alone(monkeypatch, cell):
    # The probe trains a copy of the run's model, packed again for cuDNN as the run's model is
    # (a deepcopy is not: cuDNN would copy its weights at every call and warn). Its steps move
    # neither the run's weights nor the run's random stream.
    from bookgen import sizing

    flattened = []
    flatten = torch.nn.RNNBase.flatten_parameters

    def record(layer):
        flattened.append(layer)
        flatten(layer)

    monkeypatch.setattr(torch.nn.RNNBase, "flatten_parameters", record)
    model, config, batcher = _probe_setup(cell)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = sizing.probe(model, config, batcher, CPU)
    copies = [layer for layer in flattened if all(layer is not own for own in model.layers)]
    assert len(copies) == len(model.layers)  # each layer of the copy, once
    for copied, own in zip(copies, model.layers, strict=True):
        pairs = zip(copied.parameters(), own.parameters(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    torch.manual_seed(9)
    step("fp32")
    step("fp32")
    after_steps = torch.rand(3)
    torch.manual_seed(9)
    assert torch.equal(after_steps, torch.rand(3))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_probe_on_a_gpu_steps_packed_weights_without_a_cudnn_warning():
    import warnings

    from bookgen import sizing

    model, config, batcher = _probe_setup()
    model = model.cuda()
    step = sizing.probe(model, config, batcher, torch.device("cuda"))
    torch.set_warn_always(True)  # cuDNN warns once per process otherwise
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step("fp32")
            step("fp32")
    finally:
        torch.set_warn_always(False)
    assert not [w for w in caught if "single contiguous chunk" in str(w.message)]
