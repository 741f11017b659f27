"""All checkpoint reading and writing, in one place.

A checkpoint is a folder:

    checkpoint.json             manifest: format version, configs, level, precision, progress,
                                which files hold what
    tokenizer.json              the vocabulary (for word models a HuggingFace `tokenizers` file)
    model-000120.safetensors    latest weights
    model-000100.safetensors    the weights with the best validation loss, when not the latest
    train-000120.safetensors    optimizer moments, carried recurrent state, RNG state (for resuming)
    metrics.jsonl               one JSON object per evaluation
    copy-guard-40.safetensors   the copy guard's index of the book (see guard.py), rebuildable

Tensors are stored with safetensors and everything else as JSON, so loading never unpickles and
never runs code. Every file is written to a temporary name in the same folder, fsynced and renamed
into place; the manifest is replaced last and names the files it needs, so a crash at any moment
leaves the previous manifest pointing at complete files. Files no manifest names are deleted
after the new manifest is in place.

The manifest is checked against the weight file's header (names and shapes, which safetensors
gives without loading) before any model is built from it (`check_weights`): a damaged or hostile
manifest is refused in one line, never allocated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from bookgen.errors import BookgenError
from bookgen.files import atomic_write
from bookgen.model import ModelConfig, RecurrentLM
from bookgen.tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "bookgen-checkpoint"
# 2: `progress` (was `training_state`) and the measured `precision`; 3: train_config's
# `random_seed` (was `seed`, now only ever the text a sample continues). 2 is read as 3.
FORMAT_VERSION = 3
OLDEST_READ = 2
MANIFEST = "checkpoint.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"


def append_metrics(folder: Path, record: dict) -> None:
    with open(Path(folder) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(folder: Path, step: int) -> None:
    """Drop records after `step`: a resumed run writes them again."""
    kept = [r for r in read_metrics(folder) if r["step"] <= step]
    atomic_write(Path(folder) / METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())


def read_metrics(folder: Path) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: everything before it is good
    return records


# --- what a checkpoint holds -----------------------------------------------------------------


@dataclass
class TrainingProgress:
    """Where a run stands, beyond its weights and carried state: enough to continue it exactly."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # start of the next window within each stream row
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    loss_sum: float = 0.0  # training losses since the last evaluation (for its train_loss)
    loss_count: int = 0
    last_eval_step: int = -1  # the step of the last evaluation, -1 before the first
    last_eval_used: float = 0.0  # the budget used (0..1) at the last evaluation (cadence.py)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model ready to use plus everything recorded with it."""

    path: Path
    manifest: dict
    model: RecurrentLM
    model_config: ModelConfig
    tokenizer: Tokenizer

    @property
    def level(self) -> str:
        return self.manifest["level"]

    @property
    def train_config(self) -> dict:
        return self.manifest.get("train_config", {})

    @property
    def precision(self) -> str:
        """The precision the run trained and validated in ("fp32" before format 2)."""
        return self.manifest.get("precision", {}).get("precision", "fp32")


@dataclass
class Snapshot:
    """A run as it stood at one step, copied into host memory: what `write_checkpoint` writes,
    which may be on another thread while training goes on (nothing here is the live run's)."""

    step: int
    weights: dict[str, torch.Tensor]
    train_tensors: dict[str, torch.Tensor]
    tokenizer: Tokenizer  # never changed by training
    manifest: dict  # everything but the file names, which the write decides
    is_best: bool
    has_best: bool  # an evaluation has happened, so the folder's best weights are that


def snapshot_checkpoint(
    *,
    model: RecurrentLM,
    tokenizer: Tokenizer,
    train_config: dict,
    corpus: dict,
    progress: TrainingProgress,
    precision: dict,
    optimizer: torch.optim.Optimizer | None = None,
    state: tuple[torch.Tensor, ...] | None = None,
    is_best: bool = False,
    machine: dict | None = None,
) -> Snapshot:
    """Copy the run into host memory now. Copies, not views: on the CPU `.cpu()` returns the
    very tensor, which the next step would change under a write in progress."""
    weights = {k: _host_copy(v) for k, v in model.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "level": tokenizer.level,
        "model_config": model.config.to_dict(),
        "train_config": json.loads(json.dumps(train_config)),
        "corpus": corpus,
        "precision": dict(precision),
        "progress": _progress_to_json(progress),
        "optimizer_groups": json.loads(json.dumps(_optimizer_groups(optimizer))),
        "machine": dict(machine or {}),  # where it trained: processor, device, threads, processes
    }
    return Snapshot(
        step=progress.step,
        weights=_untie(weights, model),
        train_tensors=_train_tensors(optimizer, state),
        tokenizer=tokenizer,
        manifest=manifest,
        is_best=is_best,
        has_best=progress.best_val_loss is not None,
    )


def write_checkpoint(folder: Path, snapshot: Snapshot) -> Path:
    """Write a `Snapshot` into `folder`, each file atomically, the manifest last."""
    folder = Path(folder)
    old = read_manifest(folder) if (folder / MANIFEST).exists() else None
    model_file = f"model-{snapshot.step:07d}.safetensors"
    atomic_write(folder / model_file, st_save(snapshot.weights))
    # Before the first evaluation there is no best yet: the latest weights stand in for it.
    best_file = old["files"]["best_model"] if old and snapshot.has_best else None
    if snapshot.is_best or best_file is None:
        best_file = model_file
    train_file = f"train-{snapshot.step:07d}.safetensors"
    atomic_write(folder / train_file, st_save(snapshot.train_tensors))
    if old is None or not (folder / TOKENIZER).exists():
        atomic_write(folder / TOKENIZER, snapshot.tokenizer.to_json().encode("utf-8"))
    manifest = {
        **snapshot.manifest,
        "files": {
            "tokenizer": TOKENIZER,
            "model": model_file,
            "best_model": best_file,
            "train_state": train_file,
        },
    }
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
    _remove_unreferenced(folder, manifest["files"].values())
    return folder


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _untie(weights: dict[str, torch.Tensor], model: RecurrentLM) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; tied output weights are rebuilt on load.
    if model.config.tied:
        weights.pop("output.weight", None)
    return weights


def _train_tensors(optimizer, state) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    for i, s in enumerate(state or ()):
        tensors[f"state.{i}"] = _host_copy(s)
    if optimizer is not None:
        for index, values in optimizer.state_dict()["state"].items():
            for name, value in values.items():
                tensors[f"optim.{index}.{name}"] = _host_copy(value)
    return tensors


def _optimizer_groups(optimizer) -> list[dict] | None:
    if optimizer is None:
        return None
    return optimizer.state_dict()["param_groups"]


def _progress_to_json(progress: TrainingProgress) -> dict:
    return dict(progress.__dict__)


def _remove_unreferenced(folder: Path, keep) -> None:
    keep = set(keep)
    # Only weights and training state: the copy guard's index (copy-guard-*) stays.
    for path in [*folder.glob("model-*.safetensors"), *folder.glob("train-*.safetensors")]:
        if path.name not in keep:
            path.unlink(missing_ok=True)
    for path in folder.glob(".*.tmp"):  # left by a process killed mid-write
        path.unlink(missing_ok=True)


# --- the run folder --------------------------------------------------------------------------


def has_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a saved run (its manifest)."""
    return (Path(folder) / MANIFEST).exists()


def check_out(out: Path, force: bool) -> None:
    """Refuse to start a new run over a saved one unless `force`; nothing is removed here."""
    if has_checkpoint(out) and not force:
        raise BookgenError(
            f"{out} already holds a trained model; continue it with --resume, "
            "replace it with --force, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise BookgenError(f"{out} exists and is not a folder")


def prepare_out(out: Path) -> None:
    """Make `out` ready for a new run: only called once the run's settings have been checked.

    Files of an earlier run (replaced with --force, or left without a manifest by a run killed
    before its first save) are removed, so none of them is ever mistaken for this run's.
    """
    if out.is_dir():
        for name in (MANIFEST, TOKENIZER, METRICS):
            (out / name).unlink(missing_ok=True)
        for pattern in ("model-*.safetensors", "train-*.safetensors", "copy-guard-*"):
            for path in out.glob(pattern):
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BookgenError(f"cannot create {out}: {err.strerror or err}") from err


# --- loading ---------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise BookgenError(f"{folder}: no such checkpoint folder")
    if not path.exists():
        raise BookgenError(f"{folder}: not a bookgen checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BookgenError(f"{path}: damaged checkpoint manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BookgenError(f"{path}: not a bookgen checkpoint manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BookgenError(
            f"{folder}: checkpoint format version {version} was written by a newer bookgen "
            f"(this one reads up to {FORMAT_VERSION}); upgrade bookgen to load it"
        )
    if version < OLDEST_READ:
        # Format 1 named its layers differently and did not record the measured precision.
        raise BookgenError(
            f"{folder}: checkpoint format version {version} was written by an older bookgen "
            f"(this one reads {OLDEST_READ} to {FORMAT_VERSION}); train the model again"
        )
    _check_manifest_fields(path, manifest)
    return _upgraded(manifest)


def _upgraded(manifest: dict) -> dict:
    """A manifest of an older format, read as the current one."""
    if manifest["format_version"] < 3:
        train = dict(manifest["train_config"])
        if "seed" in train:
            train["random_seed"] = train.pop("seed")
        manifest = {**manifest, "train_config": train, "format_version": 3}
    return manifest


_MANIFEST_FIELDS = {
    "level": str,
    "model_config": dict,
    "train_config": dict,
    "corpus": dict,
    "progress": dict,
    "precision": dict,
    "files": dict,
}
_MANIFEST_FILES = ("tokenizer", "model", "best_model", "train_state")


def _check_manifest_fields(path: Path, manifest: dict) -> None:
    """Every field the loaders rely on is there and has the right type, or one clear error."""
    for name, kind in _MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(name), kind):
            raise BookgenError(f"{path}: damaged checkpoint manifest (no valid {name!r})")
    for name in _MANIFEST_FILES:
        value = manifest["files"].get(name)
        if not isinstance(value, str) or "/" in value or "\\" in value or value.startswith("."):
            raise BookgenError(f"{path}: damaged checkpoint manifest (no valid files.{name})")


def read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file of the checkpoint; never unpickles."""
    path = Path(folder) / name
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise BookgenError(f"{path}: missing from the checkpoint") from err
    except OSError as err:
        raise BookgenError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise BookgenError(f"{path}: damaged or not a safetensors file ({err})") from err


def load_tokenizer(folder: Path, manifest: dict) -> Tokenizer:
    try:
        text = (Path(folder) / manifest["files"]["tokenizer"]).read_text(encoding="utf-8")
        return tokenizer_from_json(text, manifest["level"])
    except FileNotFoundError as err:
        raise BookgenError(f"{folder}: {Path(err.filename).name} is missing") from err
    except (KeyError, TypeError, ValueError) as err:
        raise BookgenError(f"{folder}: damaged tokenizer ({err!r})") from err


# Optimizer options that choose how the update is computed, not what it computes.
_IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")


def restore_training(
    folder: Path,
    manifest: dict,
    model: RecurrentLM,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> tuple[TrainingProgress, tuple[torch.Tensor, ...] | None]:
    """Load the latest weights, optimizer, RNG and carried state into a fresh run."""
    files = manifest["files"]
    _load_weights(folder, model, read_tensors(folder, files["model"]))
    model.to(device)
    tensors = read_tensors(folder, files["train_state"])
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    try:
        # How the update runs (fused, foreach) is this version's, not the save's: a run saved
        # before the fused AdamW goes on with it, and its step counts move to the device.
        running = optimizer.state_dict()["param_groups"]
        groups = [
            {**saved, **{key: own[key] for key in _IMPLEMENTATION if key in own}}
            for saved, own in zip(manifest["optimizer_groups"], running, strict=True)
        ]
        optimizer.load_state_dict({"state": moments, "param_groups": groups})
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise BookgenError(
            f"{folder}: the optimizer state does not fit this model ({err})"
        ) from err
    state_keys = sorted(k for k in tensors if k.startswith("state."))
    state = tuple(tensors[k].to(device) for k in state_keys) or None
    try:
        progress = TrainingProgress(**manifest["progress"])
    except TypeError as err:
        raise BookgenError(f"{folder}: damaged training progress in the manifest ({err})") from err
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return progress, state


def check_weights(folder: Path, manifest: dict, which: str) -> ModelConfig:
    """The manifest's model config, once the weight file `which` is known to hold the tensors it
    describes: the same names, the same shapes.

    Read from the file's header alone, before a model of the manifest's size is built: a damaged
    or hostile manifest (hidden_size 10**9) would otherwise allocate whatever it says.
    """
    try:
        config = ModelConfig.from_dict(manifest["model_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise BookgenError(f"{folder}: damaged checkpoint ({err!r})") from err
    path = Path(folder) / manifest["files"][which]
    found = _header_shapes(path)
    expected = set()
    # In the model's order, one at a time: the first difference stops it (10**9 layers too).
    for name, shape in _saved_shapes(config):
        if found.get(name) != shape:
            raise _differ(path, name, found.get(name), shape)
        expected.add(name)
    for name in sorted(found.keys() - expected):
        raise _differ(path, name, found[name], None)
    return config


def _saved_shapes(config: ModelConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each tensor a `RecurrentLM` of `config` saves, worked out without
    building it: the embedding, one single-layer LSTM/GRU per layer (PyTorch's names), the
    output (its weight not saved when tied to the embedding's), and with several styles their
    learned starts and vectors (model.py). Any load of a saved model
    checks these against a real file, so they cannot drift from model.py unnoticed."""
    gates = (4 if config.cell == "lstm" else 3) * config.hidden_size  # stacked gate rows
    yield "embedding.weight", (config.vocab_size, config.embed_size)
    for index in range(config.layers):
        size = config.embed_size if index == 0 else config.hidden_size
        yield f"layers.{index}.weight_ih_l0", (gates, size)
        yield f"layers.{index}.weight_hh_l0", (gates, config.hidden_size)
        yield f"layers.{index}.bias_ih_l0", (gates,)
        yield f"layers.{index}.bias_hh_l0", (gates,)
    if not config.tied:
        yield "output.weight", (config.vocab_size, config.hidden_size)
    yield "output.bias", (config.vocab_size,)
    kinds = 2 if config.cell == "lstm" else 1
    if config.learned_starts:
        yield "style_starts", (kinds, config.layers, config.styles, config.hidden_size)
    if config.style_vectors:
        yield "style_vectors", (config.styles, config.embed_size)


def _differ(path: Path, name: str, found: tuple | None, expected: tuple | None) -> BookgenError:
    return BookgenError(
        f"{path}: the weights do not match {MANIFEST}'s model_config: {name} is "
        f"{_shape_text(found)} in the file, {_shape_text(expected)} by the manifest"
    )


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each tensor in a safetensors file, from its header: nothing is loaded."""
    if not path.exists():
        raise BookgenError(f"{path}: missing from the checkpoint")
    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BookgenError(f"{path}: damaged or not a safetensors file ({err})") from err


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else " x ".join(map(str, shape)) or "a scalar"


def _load_weights(folder: Path, model: RecurrentLM, weights: dict[str, torch.Tensor]) -> None:
    if model.config.tied:
        weights["output.weight"] = weights.get("embedding.weight")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as err:
        raise BookgenError(f"{folder}: weights do not match the model config ({err})") from err


def load_checkpoint(
    folder: Path, *, which: str = "best_model", device: str | torch.device = "cpu"
) -> Checkpoint:
    """Load the model (`which` = "best_model" or "model", the latest) and tokenizer."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    config = check_weights(folder, manifest, which)
    files = manifest["files"]
    tokenizer = load_tokenizer(folder, manifest)
    model = RecurrentLM(config)
    _load_weights(folder, model, read_tensors(folder, files[which]))
    model.to(device).eval()
    return Checkpoint(folder, manifest, model, config, tokenizer)


def latest_checkpoint(root: Path = Path("checkpoints")) -> Path:
    """The most recently written checkpoint folder under `root`."""
    manifests = list(Path(root).glob(f"*/{MANIFEST}")) if Path(root).is_dir() else []
    if not manifests:
        raise BookgenError(
            f"no checkpoint found under {root}/: train one first (bookgen train BOOK) "
            "or pass --checkpoint DIR"
        )
    return max(manifests, key=lambda p: p.stat().st_mtime).parent
