"""bookgen.settings: each setting's one declaration (default, help, allowed values, check)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest

from bookgen.errors import BookgenError
from bookgen.settings import (
    BenchSettings,
    Cell,
    Device,
    Level,
    ModelConfig,
    Precision,
    SamplingSettings,
    TrainConfig,
)


def test_a_choice_reads_as_its_string_everywhere():
    # Checkpoints written before the Enums, and caches keyed on these values, must read the same.
    config = ModelConfig(vocab_size=5, cell="gru")
    assert config.cell is Cell.GRU and config.cell == "gru" and {"gru": 1}[config.cell] == 1
    assert json.dumps(config.to_dict()).startswith('{"vocab_size": 5, "cell": "gru", "layers"')
    assert f"{config.cell} {config.cell!r} {config.cell.upper()}" == "gru 'gru' GRU"
    assert str(TrainConfig(steps=1).level) == "char" and TrainConfig.level is Level.CHAR
    saved = json.loads(json.dumps(asdict(TrainConfig(steps=1, device="cpu"))))
    assert (saved["level"], saved["device"], saved["precision"]) == ("char", "cpu", "auto")
    assert TrainConfig(steps=1, device=saved["device"]) == TrainConfig(steps=1, device=Device.CPU)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ModelConfig(vocab_size=5, cell="transformer"), "--cell must be lstm or gru"),
        (lambda: TrainConfig(steps=1, level="bytes"), "--level must be char or word"),
        (lambda: TrainConfig(steps=1, device="tpu"), "--device must be auto, cpu or cuda"),
        (lambda: TrainConfig(steps=1, precision="fp16"), "--precision must be auto, bf16 or fp32"),
        (lambda: BenchSettings(cell="rnn"), "--cell must be lstm or gru, not 'rnn'"),
    ],
)
def test_a_value_outside_its_choices_is_one_error_for_python_callers(make, message):
    # The command line never gets here (typer checks the Enum); bookgen.train(...) callers do.
    with pytest.raises(BookgenError, match=message):
        make()


def test_every_choice_field_is_its_enum():
    config = TrainConfig(steps=1, level="word", device="cpu", precision="bf16")
    assert (config.level, config.device, config.precision) == (
        Level.WORD, Device.CPU, Precision.BF16,
    )  # fmt: skip
    assert type(BenchSettings(level="word").level) is Level


def test_every_setting_a_user_gives_has_its_help():
    for config in (ModelConfig, TrainConfig, SamplingSettings, BenchSettings):
        for field in fields(config):
            assert config.help(field.name).endswith("."), (config.__name__, field.name)


def test_bench_takes_training_defaults_but_its_reference_shape():
    bench = BenchSettings()
    assert (bench.hidden_size, bench.cell, bench.level, bench.device) == (
        ModelConfig.hidden_size, ModelConfig.cell, TrainConfig.level, TrainConfig.device,
    )  # fmt: skip
    assert BenchSettings.help("bptt") == TrainConfig.help("bptt")
    assert (bench.layers, bench.batch_size, bench.bptt) == (2, 64, 128)  # the README's figures
    assert BenchSettings(level="word").vocab_size == TrainConfig.vocab_size
