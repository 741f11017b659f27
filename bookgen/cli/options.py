"""The options several commands share, declared once (as huggingface_hub's CLI keeps its
`RepoIdArg`, `TokenOpt`): each an `Annotated` alias whose help comes from its setting's field in
`bookgen.settings`, and whose name is the field's, so no dict renames options into settings.

A command gives the default: the field's own (`hidden_size: HiddenSizeOption =
ModelConfig.hidden_size`), so `--help` shows the dataclass's default and no other. The options a
user did not give are left out of the call (`given`), so the library still tells "not given"
from "given the default" (a resumed run keeps its saved value; sizing for --minutes keeps a size
given by hand).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bookgen.settings import (
    Cell,
    Device,
    Level,
    ModelConfig,
    SamplingSettings,
    TrainConfig,
)

MODEL = "Model"
TRAINING = "Training"


def field_option(config: type, name: str, *spellings: str, **options: Any) -> Any:
    """A typer.Option whose help is the setting's own (`config.help(name)`)."""
    return typer.Option(*spellings, help=config.help(name), **options)


def given(context: typer.Context, *configs: type) -> dict[str, Any]:
    """The options of `configs`' fields that the user gave on the command line, as typed.

    Enum values stay plain strings here: each config parses its own (`Choice.parse`). The
    source is compared by name: recent typer releases carry their own copy of click, whose
    `ParameterSource` is not click's.
    """
    names = {name for config in configs for name in config.__dataclass_fields__}
    return {
        name: value
        for name, value in context.params.items()
        if name in names and context.get_parameter_source(name).name != "DEFAULT"
    }


# --- what a command reads ---------------------------------------------------------------------

BooksArgument = Annotated[
    list[str],
    typer.Argument(
        help="Books: .txt files, folders of them, globs, or catalogue names (shakespeare, "
        "pride-and-prejudice, moby-dick, ...).",
        metavar="BOOK",
        show_default=False,
    ),
]
# corpus, train, explain, eval, style: how to decode the books, when detection gets it wrong.
EncodingOption = Annotated[
    Optional[str],
    typer.Option(
        help="Decode the books in this encoding (gb18030, big5, shift_jis, euc_kr, cp1251, "
        "latin-1, ...) \\[default: detected, book by book].",
        metavar="NAME",
        show_default=False,
    ),
]
KeepMarkupOption = Annotated[
    bool,
    typer.Option(
        "--keep-markup",
        help="Keep Aozora Bunko's markup (its legend, ruby 《…》 and ｜, ［＃…］ notes and 底本： "
        "colophon), which is otherwise stripped as the Gutenberg licence is.",
    ),
]
# eval, sample, chat, report, style: the model to read.
CheckpointOption = Annotated[
    Optional[Path],
    typer.Option(help="Checkpoint folder \\[default: newest under checkpoints/]."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of tables.")
]

# --- the model and how it is trained (train, bench; explain the last three) --------------------

CellOption = Annotated[Cell, field_option(ModelConfig, "cell", rich_help_panel=MODEL)]
LayersOption = Annotated[int, field_option(ModelConfig, "layers", rich_help_panel=MODEL)]
HiddenSizeOption = Annotated[
    int,
    field_option(ModelConfig, "hidden_size", "--hidden-size", "--hidden", rich_help_panel=MODEL),
]
DeviceOption = Annotated[Device, field_option(TrainConfig, "device", rich_help_panel=TRAINING)]
LevelOption = Annotated[Level, field_option(TrainConfig, "level", rich_help_panel=MODEL)]
BatchSizeOption = Annotated[int, field_option(TrainConfig, "batch_size", rich_help_panel=TRAINING)]
BpttOption = Annotated[int, field_option(TrainConfig, "bptt", rich_help_panel=TRAINING)]

# --- how text is drawn (sample, chat) ---------------------------------------------------------

LengthOption = Annotated[int, field_option(SamplingSettings, "length")]
TemperatureOption = Annotated[float, field_option(SamplingSettings, "temperature")]
TopKOption = Annotated[int, field_option(SamplingSettings, "top_k")]
TopPOption = Annotated[float, field_option(SamplingSettings, "top_p")]
MaxCopyOption = Annotated[int, field_option(SamplingSettings, "max_copy", metavar="CHARACTERS")]
RandomSeedOption = Annotated[
    Optional[int],
    typer.Option(
        help="Fixes the draws: the same random seed and settings give the same text "
        "\\[default: other draws each time]."
    ),
]
