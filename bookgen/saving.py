"""What a training run writes into its folder as it goes, through checkpoint.py: checkpoints
with the record of the machine they trained on, the metrics, and at the end the copy guard's
index of the books.

Only the first process writes; the others take part in gathering the carried state, which is
saved for all B rows so that any number of processes can resume the run.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import torch

from bookgen import checkpoint as ckpt
from bookgen import guard
from bookgen.context import processor_name
from bookgen.distributed import World
from bookgen.errors import BookgenError
from bookgen.model import RecurrentLM, State
from bookgen.run import Run
from bookgen.sampler import DEFAULTS as SAMPLING
from bookgen.settings import TrainConfig


class RunSaver:
    """Writes one run's folder: `out`, on the first of the `world`'s processes."""

    def __init__(self, out: Path, world: World, run: Run, texts: list[str] | None = None) -> None:
        self.out = out
        self.world = world
        self.tokenizer = run.data.tokenizer
        self.corpus = run.data.corpus  # which books, their fingerprints (data.prepare_data)
        self.precision = run.precision
        self.device = run.context.device
        self.size_note = run.size_note
        self.texts = texts  # books given as text (from Python): the copy guard indexes these

    def save(
        self,
        model: RecurrentLM,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        progress: ckpt.TrainingProgress,
        state: State,
        *,
        is_best: bool,
    ) -> bool:
        """Save the run as it stands (`state`: this process's rows); whether this process wrote."""
        state = self.world.gather_rows(state)  # all B rows, so any world size resumes
        if not self.world.is_main:
            return False
        ckpt.save_checkpoint(
            self.out,
            model=model,
            tokenizer=self.tokenizer,
            train_config=asdict(config),
            corpus=self.corpus,
            progress=progress,
            precision=self.precision.to_dict(),
            optimizer=optimizer,
            state=state,
            is_best=is_best,
            machine=self.machine(),
        )
        return True

    def append_metrics(self, record: dict) -> None:
        if self.world.is_main:
            ckpt.append_metrics(self.out, record)

    def machine(self) -> dict:
        """Where this run trained, for `bookgen report` (a resumed run records where it ended)."""
        return {
            "processor": self._processor,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "processes": self.world.size,
            "torch": torch.__version__,
            "size_note": self.size_note,
        }

    @functools.cached_property
    def _processor(self) -> str:
        return processor_name()  # read from /proc/cpuinfo: once, not at every save

    def index_for_copy_guard(self) -> str | None:
        """Index the books for sampling's copy guard now, while they are surely at hand (one
        pass over the text; for another --max-copy, sampling builds its own). Returns why no
        index was built, if none was."""
        reason = guard.too_large(self.corpus)
        if reason is not None:
            return reason
        try:
            guard.ensure_index(self.out, self.corpus, self.tokenizer, SAMPLING.max_copy, self.texts)
        except BookgenError as error:  # the books moved during training: sampling will say
            return f"copy guard: no index built ({error})"
        return None
