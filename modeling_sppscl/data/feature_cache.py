"""Cache of the frozen towers' outputs, so that training runs the SPP-SCL head (and any trainable tower) alone.

With a tower frozen (and in eval mode), what it returns for a sample never changes during training, yet the
paper's code recomputes it twice per batch in every epoch. [`extract_features`] runs the frozen towers once over a
dataset and stores their outputs on disk, one `datasets.Dataset` per tower; [`CachedFeatureCollator`] turns the
rows into batches that [`SppSclModel`] takes through `text_hidden_states=` / `image_features=`. With one tower
trainable (fine-tuning the text tower next to a frozen vision tower, say), only the frozen tower is cached and the
rows keep the other modality's raw column, which the collator turns into that tower's inputs at every step.

Each tower's cache is keyed by what its outputs depend on alone (see `fingerprint.py`): the text tower's by the
text tower, the tokenizer and the texts; the vision tower's by the vision tower, the image processor and the
image bytes. A run that changes only the text tower, or only which tower trains, reuses the vision tower's cache
(and the reverse). The rows returned join the rows' own `id` and `label`, a `length` column (tokens, for
grouping by length) and the towers' columns.

Storage (one Arrow file per tower cache, memory-mapped when read): `text_hidden_states` is a flat list holding
the `[k, n, H]` array given by `text_shape` (a flat list reads about twice as fast as a dynamic `Array3D` and keeps
the `[k, n, H]` order), `image_features` an `Array3D` `[C, h, w]`. With `text_pooling="masked_mean"` only the `n`
real tokens are kept (the summary token and the separator included); with `"padded_mean"` (paper) the whole padded
text and its `attention_mask` are kept, since the head averages over the padding's features too.

A tower's cache folder is `cache_dir/<tower>-<fingerprint>/`. The towers extracted together are written under one
staging folder and each renamed into place when complete, so a folder with a fingerprint's name is always a
finished cache; staging folders left by a killed extraction are never read and are removed by the next
extraction on the same machine.
"""

import json
import logging
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from datasets import Dataset, Value, concatenate_datasets
from datasets import Image as ImageFeature

from ..modeling_sppscl import SppSclModel
from ..processing_sppscl import SppSclProcessor
from .cache_format import CachedFeatureCollator, tower_features
from .collators import ImageTextCollator
from .extraction import RAW_COLUMNS, STORAGE_DTYPES, TOWERS, default_num_workers, resolve_precision, write_features
from .fingerprint import CACHE_FORMAT_VERSION, cache_fingerprint, processor_settings, tower_fingerprint_parts, weights_digest


logger = logging.getLogger(__name__)

FEATURES_FILE = "features.arrow"
MANIFEST_FILE = "fingerprint.json"
# `.staging-<fingerprint>-<host>-<pid>-<random>`: the host and process tell whether its writer is still alive.
STAGING_PREFIX = ".staging-"


# ----- checks -------------------------------------------------------------------------------------------------
def frozen_towers(model: SppSclModel) -> tuple[str, ...]:
    """The towers whose outputs can be cached: frozen in the config and without a trainable parameter."""
    modules = {"text": model.text_model, "vision": model.vision_model}
    flags = {"text": model.config.freeze_text_model, "vision": model.config.freeze_vision_model}
    return tuple(name for name in TOWERS if flags[name] and not any(p.requires_grad for p in modules[name].parameters()))


def _check_towers(model: SppSclModel, towers: tuple[str, ...]) -> None:
    if not towers or any(name not in TOWERS for name in towers) or len(set(towers)) != len(towers):
        raise ValueError(f"towers must name one or both of {TOWERS}, got {towers!r}")
    frozen = frozen_towers(model)
    for name in towers:
        if name not in frozen:
            raise ValueError(
                f"The {name} tower is trainable: its outputs change during training, so they cannot be cached. "
                f"Freeze it (freeze_{name}_model=True), cache only the frozen tower (towers={frozen!r}), or train "
                f"from raw inputs with ImageTextCollator."
            )


def _warn_train_mode_towers(model: SppSclModel) -> None:
    if model.config.frozen_towers_follow_train_mode:
        warnings.warn(
            "frozen_towers_follow_train_mode=True (paper variant): training runs the frozen towers in train mode "
            "(BatchNorm batch statistics, dropout), which no cache can reproduce; the cache holds eval-mode tower "
            "outputs.",
            UserWarning,
            stacklevel=3,
        )


def _check_processor_padding(model: SppSclModel, processor: SppSclProcessor) -> None:
    if model.config.text_pooling == "padded_mean" and not processor.pad_to_max_length:
        raise ValueError(
            "text_pooling='padded_mean' averages over the padding, so every text must be padded to one fixed "
            "length before the tower runs: use a processor with pad_to_max_length=True (SppSclProcessor.for_config)."
        )


# ----- folders ------------------------------------------------------------------------------------------------
def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_staging(cache_dir: Path) -> list[Path]:
    """Remove the staging folders of extractions killed on this machine (their process is gone); those of live
    processes and of other machines sharing the folder are left alone. Returns the removed folders."""
    removed = []
    host = socket.gethostname()
    for staging in cache_dir.glob(f"{STAGING_PREFIX}*"):
        parts = staging.name.rsplit("-", 3)
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _process_alive(int(parts[2])):
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
    return removed


def _publish(staging: Path, folder: Path) -> None:
    """Rename the finished `staging` folder to `folder`; a folder already there (another process finished the
    same cache first) wins and ours is dropped."""
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / MANIFEST_FILE).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def load_feature_cache(folder: str | Path) -> Dataset:
    """One tower's cache written by [`extract_features`], memory-mapped."""
    return Dataset.from_file(str(Path(folder) / FEATURES_FILE))


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "sppscl_features"


# ----- extraction ---------------------------------------------------------------------------------------------
def extract_features(
    model: SppSclModel,
    processor: SppSclProcessor,
    dataset: Dataset,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    storage_dtype: str = "float32",
    blank_image_size: tuple[int, int] = (224, 224),
    towers: Sequence[str] = TOWERS,
    device: torch.device | str | None = None,
    precision: str = "auto",
    num_workers: int | None = None,
    split: str | None = None,
) -> Dataset:
    """Run the frozen towers once over `dataset` (`id`, `text`, `image`, `label` rows) and cache their outputs.

    Args:
        model: an [`SppSclModel`] whose cached towers are frozen (a trainable one raises `ValueError`). It is moved
            to `device`, where training will run it anyway.
        processor: the processor training would use (its padding must match the model's `text_pooling`).
        dataset: the rows; a missing image (None) becomes a black image of `blank_image_size`.
        cache_dir: parent folder of the caches (default: the datasets cache, `.../sppscl_features`).
        batch_size: samples per tower forward.
        storage_dtype: `"float32"` (exact) or `"float16"` (half the disk; see docs/PERFORMANCE.md).
        blank_image_size: (width, height) of the image standing in for a missing one.
        towers: the towers to cache, `("text", "vision")` or one of them (see `frozen_towers`): a one-tower cache
            keeps the other modality's raw column (`text` or `image`) for the tower that trains.
        device: where the towers run: the device training will use (`TrainingArguments.device`); by default this
            process's accelerator as `accelerate` assigns it (`PartialState().device`), not the model's device.
        precision: autocast dtype of the towers: `"auto"` (bfloat16 on CUDA, float16 where bfloat16 is missing,
            float32 elsewhere), `"float32"`, `"bfloat16"` or `"float16"`. Part of the fingerprint.
        num_workers: `DataLoader` workers reading and decoding the rows (default: 0 on CPU, up to 8 otherwise).
        split: the split's name, shown in the log line and progress bar of the extraction.

    Returns:
        A `datasets.Dataset` with `id`, `label` (None where the rows have none), `length` (tokens, for grouping by
        length) and the cached towers' columns, memory-mapped: `text_shape`, `text_hidden_states` (and
        `attention_mask` for `padded_mean`); `image_features`; a one-tower cache keeps the other tower's raw column.
        Each tower's columns are read from `cache_dir/<tower>-<fingerprint>/` when the same tower, processor
        settings and texts (images) were seen before. [`CachedFeatureCollator`] batches it.
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {tuple(STORAGE_DTYPES)}, got {storage_dtype!r}")
    if len(dataset) == 0:
        raise ValueError("extract_features got an empty dataset")
    _check_towers(model, tuple(towers))
    towers = tuple(name for name in TOWERS if name in towers)
    kept = [RAW_COLUMNS[name] for name in TOWERS if name not in towers]
    missing = [column for column in kept if column not in dataset.column_names]
    if missing:
        raise ValueError(f"A one-tower cache keeps the other tower's raw column, but the dataset has no {missing} column")
    _check_processor_padding(model, processor)
    _warn_train_mode_towers(model)
    device = torch.device(device) if device is not None else PartialState().device
    precision = resolve_precision(precision, device)
    cache_dir = Path(cache_dir if cache_dir is not None else default_cache_dir())
    parts = {name: tower_fingerprint_parts(name, model, processor, dataset, storage_dtype, tuple(blank_image_size), precision) for name in towers}
    folders = {name: cache_dir / f"{name}-{cache_fingerprint(parts[name])}" for name in towers}
    for name, folder in folders.items():
        if (folder / MANIFEST_FILE).is_file():
            logger.info("reusing cache %s", folder)
    missing_towers = {name: folder for name, folder in folders.items() if not (folder / MANIFEST_FILE).is_file()}
    if missing_towers:
        collator = ImageTextCollator(processor, blank_image_size=blank_image_size)
        workers = default_num_workers(device) if num_workers is None else num_workers
        _extract(model, dataset, missing_towers, parts, cache_dir, collator, batch_size, storage_dtype, device, precision, workers, split)
    return _join(dataset, processor, {name: load_feature_cache(folder) for name, folder in folders.items()}, kept)


def _extract(model, dataset, folders, parts, cache_dir, collator, batch_size, storage_dtype, device, precision, workers, split) -> None:
    """Run the towers of `folders` in one pass and publish each tower's cache in its folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(cache_dir):
        logger.warning("removed %s, left by an interrupted extraction", stale)
    for folder in folders.values():
        if folder.is_dir():  # a folder whose extraction was interrupted before its manifest was written
            shutil.rmtree(folder)
    name = cache_fingerprint({tower: folder.name for tower, folder in folders.items()})
    staging = cache_dir / f"{STAGING_PREFIX}{name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    description = "Extracting frozen-tower features" + (f" ({split})" if split else "")
    # The towers over every pair can take minutes to hours: say what starts, then show its progress.
    logger.info("%s: the %s tower(s) over %d pairs on %s (%s, batches of %d)", description, " and ".join(folders), len(dataset), device,
                precision, batch_size)
    try:
        for tower in folders:
            (staging / tower).mkdir()
        write_features(model, dataset, {tower: staging / tower / FEATURES_FILE for tower in folders}, collator, batch_size, storage_dtype,
                       device, precision, workers, description)
        for tower, folder in folders.items():
            (staging / tower / MANIFEST_FILE).write_text(json.dumps(parts[tower], indent=2, sort_keys=True) + "\n")
            _publish(staging / tower, folder)
            logger.info("wrote cache %s (%s tower on %s, %s)", folder, tower, device, precision)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _join(dataset: Dataset, processor: SppSclProcessor, caches: dict[str, Dataset], kept: list[str]) -> Dataset:
    """The rows' `id`, `label` and `length`, the towers' cached columns and the `kept` raw columns, side by side."""
    if isinstance(dataset.features.get("image"), ImageFeature):
        dataset = dataset.cast_column("image", ImageFeature(decode=False))  # kept as stored (its bytes), never decoded
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    lengths = processor.tokenizer(list(dataset["text"]), truncation=True, max_length=processor.text_max_length)["input_ids"]
    rows = Dataset.from_dict(
        {"id": [str(row_id) for row_id in dataset["id"]],
         "label": list(dataset["label"]) if "label" in dataset.column_names else [None] * len(dataset),
         "length": [len(ids) for ids in lengths]},
        features=datasets.Features({"id": Value("string"), "label": Value("int64"), "length": Value("int32")}),
    )
    joined = concatenate_datasets([rows, *caches.values(), dataset.select_columns(kept)], axis=1)
    # numpy keeps the stored dtype (dtype=None); the collator upcasts float16 in torch, which is ~3x faster.
    return joined.with_format("numpy", dtype=None)


__all__ = [
    "CACHE_FORMAT_VERSION",
    "CachedFeatureCollator",
    "STORAGE_DTYPES",
    "TOWERS",
    "cache_fingerprint",
    "extract_features",
    "frozen_towers",
    "load_feature_cache",
    "processor_settings",
    "remove_stale_staging",
    "tower_features",
    "tower_fingerprint_parts",
    "weights_digest",
]
