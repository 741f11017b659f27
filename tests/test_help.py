"""`--help`: each setting's default and help come from its dataclass, and asking for help loads
neither torch nor the library."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import MISSING, fields

import pytest
from typer.testing import CliRunner

from bookgen.cli import app
from bookgen.settings import (
    DEFAULT_MINUTES,
    BenchSettings,
    ModelConfig,
    SamplingSettings,
    TrainConfig,
)

COMMANDS = ["corpus", "train", "explain", "eval", "report", "sample", "style", "chat", "bench"]
# The dataclasses whose fields a command's options are.
SETTINGS = {
    "train": (ModelConfig, TrainConfig),
    "explain": (TrainConfig,),
    "sample": (SamplingSettings,),
    "chat": (SamplingSettings,),
    "bench": (BenchSettings,),
}


def shown_options(command: str) -> dict[str, str]:
    """option name -> its whole row in `bookgen COMMAND --help`, continuation lines joined."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows: dict[str, str] = {}
    name = None
    for line in result.stdout.splitlines():
        cells = line.strip("│ ╭╰─╮╯")
        start = re.match(r"(--[a-z-]+)", cells)
        if start:
            name = start.group(1)
            rows[name] = cells
        elif name is not None and not line.startswith(("╭", "╰")):
            rows[name] += " " + cells.strip()
        else:
            name = None
    return rows


def default_shown(row: str) -> str | None:
    found = re.search(r"\[default:\s+([^\]]+)\]", row)
    return re.sub(r"\s+", " ", found.group(1)) if found else None


@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_every_default_in_help_is_the_dataclass_default(command):
    rows = shown_options(command)
    checked = []
    for config in SETTINGS[command]:
        for field in fields(config):
            row = rows.get("--" + field.name.replace("_", "-"))
            if row is None or field.default is MISSING:
                continue  # not an option of this command (ModelConfig's vocab_size is the data's)
            checked.append(field.name)
            # The setting's own help, word for word (train's --minutes adds what it sizes).
            assert config.help(field.name) in re.sub(r"\s+", " ", row), field.name
            shown = default_shown(row)
            if field.default is None or isinstance(field.default, bool):
                # None: nothing to show; a flag (--lowercase) is off unless given.
                assert shown is None or field.name == "minutes", (field.name, shown)
            else:
                assert shown == str(field.default), (command, field.name, shown)
    assert len(checked) >= {"train": 20, "explain": 3, "bench": 8}.get(command, 5), checked


def test_a_budget_given_by_nobody_is_the_default_minutes():
    row = shown_options("train")["--minutes"]
    assert default_shown(row) == f"{DEFAULT_MINUTES:g} when no budget is given"


def test_help_lists_the_allowed_values():
    rows = shown_options("train")
    assert "<char|word>" in rows["--level"] and "<lstm|gru>" in rows["--cell"]
    assert "<auto|cpu|cuda>" in rows["--device"] and "<auto|bf16|fp32>" in rows["--precision"]


def test_help_imports_neither_torch_nor_the_library():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bookgen.cli import app\n"
        f"for command in [[], *([c] for c in {COMMANDS!r})]:\n"
        "    result = CliRunner().invoke(app, [*command, '--help'])\n"
        "    assert result.exit_code == 0, result.output\n"
        "    assert 'Usage' in result.output\n"
        "print(sorted(m for m in ('torch', 'numpy', 'bookgen.api') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_python_dash_m_bookgen_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "bookgen", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and all(c in done.stdout for c in COMMANDS)


def test_the_package_loads_torch_only_when_its_api_is_used():
    code = (
        "import sys\n"
        "import bookgen\n"
        "assert 'torch' not in sys.modules\n"
        "from bookgen import TextGenerator, load, train\n"
        "import bookgen.api, bookgen.sampler\n"
        "assert train is bookgen.api.train and load is bookgen.sampler.load\n"
        "assert TextGenerator is bookgen.sampler.TextGenerator and bookgen.train is train\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("columns", ["60", "200"])
def test_a_commands_description_is_wrapped_to_the_terminal_not_the_source(columns: str):
    # The docstring breaks after "Each step"; the help must not, on a narrow or a wide terminal.
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    lines = [line.strip(" │") for line in result.stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if "Each step" in line)
    assert not lines[start].endswith("Each step")
    if columns == "200":
        assert (
            "Each step reads the next --bptt tokens of every stream; the hidden state"
            in (lines[start])
        )
