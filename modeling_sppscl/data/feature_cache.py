"""Cache of the frozen towers' outputs, so that training runs the SPP-SCL head alone.

With both towers frozen (and in eval mode), what they return for a sample never changes during training, yet the
paper's code recomputes it twice per batch in every epoch. [`extract_features`] runs the towers once over a
dataset and stores their outputs on disk as a `datasets.Dataset`; [`CachedFeatureCollator`] turns its rows into
batches that [`SppSclModel`] takes through `text_hidden_states=` / `image_features=`.

Storage (one Arrow file per cache, memory-mapped when read): `text_hidden_states` is a flat list holding the
`[k, n, H]` array given by `text_shape` (a flat list reads about twice as fast as a dynamic `Array3D` and keeps the
`[k, n, H]` order), `image_features` an `Array3D` `[C, h, w]`. With `text_pooling="masked_mean"` only the `n` real
tokens are kept (the summary token and the separator included); with `"padded_mean"` (paper) the whole padded text
and its `attention_mask` are kept, since the head averages over the padding's features too.

The cache folder is `cache_dir/<fingerprint>/`: the fingerprint hashes both towers' configs and weights, the
processor's settings, the head settings that choose what is stored, the storage dtype and the dataset's own
fingerprint, so a changed input never reuses a stale cache. Image files are identified by their paths (as in the
dataset's fingerprint): replacing an image file in place is not detected.
"""

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Array3D, Dataset, Features, List, Value
from torch import nn

from ..modeling_sppscl import SppSclModel
from ..processing_sppscl import SppSclProcessor
from .cached_collator import CachedFeatureCollator
from .collators import ImageTextCollator


logger = logging.getLogger(__name__)

# Bump when the stored layout changes, so that caches written by an older layout are not read.
CACHE_FORMAT_VERSION = 1
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
FEATURES_FILE = "features.arrow"
TOWERS = ("text", "vision")
# The raw column each tower reads: a one-tower cache keeps the one of the tower that is not cached.
RAW_COLUMNS = {"text": "text", "vision": "image"}
# Written last: a folder without it is an interrupted extraction and is redone.
MANIFEST_FILE = "fingerprint.json"


# ----- fingerprint --------------------------------------------------------------------------------------------
def _digest_json(value: Any) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def weights_digest(module: nn.Module) -> str:
    """Hash of every tensor of `module.state_dict()` (names, dtypes, shapes and bytes; buffers included).

    blake2b reads about 1.4 GB/s here: 0.4 s for BERT-base + ResNet-50 (532 MB in float32).
    """
    hasher = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().data)
    return hasher.hexdigest()


def _tokenizer_settings(tokenizer) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # A fast tokenizer's JSON holds its vocabulary, normalizer and special-token template at once; its
        # `truncation` and `padding` entries only echo the last call's arguments, so they are left out.
        definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        definition = sorted(tokenizer.get_vocab().items())
    return {
        "class": type(tokenizer).__name__,
        "definition": _digest_json(definition),
        "init_kwargs": _digest_json(tokenizer.init_kwargs),
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
    }


def processor_settings(processor: SppSclProcessor) -> dict[str, Any]:
    """Everything of the processor that changes what the towers see (image processor, tokenizer, padding)."""
    return {"processor": processor.to_dict(), "tokenizer": _tokenizer_settings(processor.tokenizer)}


def cache_fingerprint_parts(
    model: SppSclModel,
    processor: SppSclProcessor,
    dataset: Dataset,
    storage_dtype: str,
    blank_image_size: tuple[int, int],
    towers: tuple[str, ...] = TOWERS,
) -> dict[str, str]:
    """Digest of each input the cache depends on (written next to the cache, to tell what changed). A one-tower
    cache does not depend on the other tower, whose weights change as it trains."""
    config = model.config
    parts = {
        "format_version": str(CACHE_FORMAT_VERSION),
        "cached_towers": ",".join(towers),
        "processor": _digest_json(processor_settings(processor)),
        "storage_dtype": storage_dtype,
        "blank_image_size": _digest_json(list(blank_image_size)),
        "dataset": dataset._fingerprint,
    }
    if "text" in towers:
        parts["text_config"] = _digest_json(config.text_config.to_dict())
        parts["text_weights"] = weights_digest(model.text_model)
        parts["head_inputs"] = _digest_json({"num_text_layers": config.num_text_layers, "text_pooling": config.text_pooling})
    if "vision" in towers:
        parts["vision_config"] = _digest_json(config.vision_config.to_dict())
        parts["vision_weights"] = weights_digest(model.vision_model)
    return parts


def cache_fingerprint(parts: dict[str, str]) -> str:
    """One hex string naming the cache folder."""
    return _digest_json(parts)


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


# ----- extraction ---------------------------------------------------------------------------------------------
def _feature_map_shape(model: SppSclModel, collator: ImageTextCollator) -> tuple[int, int, int]:
    """`[C, h, w]` of the vision tower's map, read from one blank image (Array3D needs it up front)."""
    pixels = collator.processor.preprocess_images([collator.blank_image()])["pixel_values"]
    return tuple(model.vision_tower_features(pixels.to(model.device)).shape[1:])


def cache_features(
    storage_dtype: str, feature_map_shape: tuple[int, int, int] | None, padded: bool, raw: Features | None = None
) -> Features:
    """Arrow schema of the cache's rows: the text tower's columns unless the text is kept `raw`, `image_features`
    when `feature_map_shape` is given, and the `raw` columns kept for the tower that is not cached."""
    raw = raw or Features()
    columns = {"id": Value("string"), "label": Value("int64"), "length": Value("int32")}
    if "text" not in raw:
        columns["text_shape"] = List(Value("int32"), length=3)
        columns["text_hidden_states"] = List(Value(storage_dtype))
        if padded:
            columns["attention_mask"] = List(Value("int8"))
    if feature_map_shape is not None:
        columns["image_features"] = Array3D(feature_map_shape, storage_dtype)
    return Features({**columns, **raw})


def _check_finite(features: torch.Tensor, rows: list[dict[str, Any]], storage: torch.dtype) -> None:
    bad = ~features.isfinite().flatten(1).all(dim=1)
    if bad.any():
        ids = [str(row.get("id")) for row, is_bad in zip(rows, bad.tolist()) if is_bad]
        hint = " (beyond float16's range: use storage_dtype='float32')" if storage == torch.float16 else ""
        raise ValueError(f"The towers gave non-finite features for rows {ids}{hint}")


def _rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def _text_columns(model: SppSclModel, text_inputs: dict[str, torch.Tensor], rows, storage: torch.dtype, padded: bool) -> dict[str, list]:
    inputs = {name: tensor.to(model.device) for name, tensor in text_inputs.items()}
    hidden = model.text_tower_hidden_states(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
    mask = text_inputs["attention_mask"]
    hidden = hidden.to("cpu", storage).transpose(0, 1).contiguous()  # [B, k, L, H]
    _check_finite(hidden, rows, storage)
    texts = [sample if padded else sample[:, sample_mask.bool()] for sample, sample_mask in zip(hidden, mask)]
    columns = {
        "text_shape": [list(text.shape) for text in texts],
        "text_hidden_states": [text.reshape(-1).numpy() for text in texts],
    }
    if padded:
        columns["attention_mask"] = list(mask.to(torch.int8).numpy())
    return columns


def _extract_batch(
    model: SppSclModel, collator: ImageTextCollator, storage: torch.dtype, padded: bool, towers, batch: dict[str, list]
) -> dict[str, list]:
    rows = _rows(batch)
    # The token count is kept for every cache: grouping by length needs it, also when the text stays raw.
    text_inputs = collator.text_inputs(rows)
    output = {
        "id": [str(row.get("id", "")) for row in rows],
        "label": [row.get("label") for row in rows],
        "length": text_inputs["attention_mask"].sum(dim=1).tolist(),
    }
    if "text" in towers:
        output.update(_text_columns(model, text_inputs, rows, storage, padded))
    if "vision" in towers:
        pixels = collator.image_inputs(rows)["pixel_values"].to(model.device)
        images = model.vision_tower_features(pixels).to("cpu", storage)
        _check_finite(images, rows, storage)
        output["image_features"] = list(images.numpy())
    return output


def load_feature_cache(folder: str | Path) -> Dataset:
    """A cache written by [`extract_features`], memory-mapped, formatted for [`CachedFeatureCollator`]."""
    cache = Dataset.from_file(str(Path(folder) / FEATURES_FILE))
    # numpy keeps the stored dtype (dtype=None); the collator upcasts float16 in torch, which is ~3x faster.
    return cache.with_format("numpy", dtype=None)


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "sppscl_features"


def extract_features(
    model: SppSclModel,
    processor: SppSclProcessor,
    dataset: Dataset,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    storage_dtype: str = "float32",
    blank_image_size: tuple[int, int] = (224, 224),
    towers: Sequence[str] = TOWERS,
) -> Dataset:
    """Run the frozen towers once over `dataset` (`id`, `text`, `image`, `label` rows) and cache their outputs.

    Args:
        model: an [`SppSclModel`] whose cached towers are frozen (a trainable one raises `ValueError`).
        processor: the processor training would use (its padding must match the model's `text_pooling`).
        dataset: the rows; a missing image (None) becomes a black image of `blank_image_size`.
        cache_dir: parent folder of the caches (default: the datasets cache, `.../sppscl_features`).
        batch_size: samples per tower forward.
        storage_dtype: `"float32"` (exact) or `"float16"` (half the disk; see docs/PERFORMANCE.md).
        blank_image_size: (width, height) of the image standing in for a missing one.
        towers: the towers to cache, `("text", "vision")` or one of them (see `frozen_towers`): a one-tower cache
            keeps the other modality's raw column (`text` or `image`) for the tower that trains.

    Returns:
        A memory-mapped `datasets.Dataset` with `id`, `label`, `length` (real tokens, for grouping by length) and
        the cached towers' columns: `text_shape`, `text_hidden_states` (and `attention_mask` for `padded_mean`);
        `image_features`. Read from `cache_dir/<fingerprint>/` when the same towers, processor, settings and
        dataset were seen before. [`CachedFeatureCollator`] batches it.
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {tuple(STORAGE_DTYPES)}, got {storage_dtype!r}")
    if len(dataset) == 0:
        raise ValueError("extract_features got an empty dataset")
    _check_towers(model, tuple(towers))
    towers = tuple(name for name in TOWERS if name in towers)
    _check_processor_padding(model, processor)
    _warn_train_mode_towers(model)
    parts = cache_fingerprint_parts(model, processor, dataset, storage_dtype, tuple(blank_image_size), towers)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cache_fingerprint(parts)
    if (folder / MANIFEST_FILE).is_file():
        logger.info("reusing cache %s", folder)
        return load_feature_cache(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_features(model, processor, dataset, folder, batch_size, storage_dtype, tuple(blank_image_size), towers)
    (folder / MANIFEST_FILE).write_text(json.dumps(parts, indent=2, sort_keys=True) + "\n")
    logger.info("wrote cache %s", folder)
    return load_feature_cache(folder)


def _write_features(
    model: SppSclModel,
    processor: SppSclProcessor,
    dataset: Dataset,
    folder: Path,
    batch_size: int,
    storage_dtype: str,
    blank_image_size: tuple[int, int],
    towers: tuple[str, ...],
) -> None:
    collator = ImageTextCollator(processor, blank_image_size=blank_image_size)
    padded = model.config.text_pooling == "padded_mean"
    kept = [RAW_COLUMNS[name] for name in TOWERS if name not in towers]
    missing = [column for column in kept if column not in dataset.column_names]
    if missing:
        raise ValueError(f"A one-tower cache keeps the other tower's raw column, but the dataset has no {missing} column")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            shape = _feature_map_shape(model, collator) if "vision" in towers else None
            features = cache_features(storage_dtype, shape, padded, Features({c: dataset.features[c] for c in kept}))
            dataset.map(
                lambda batch: _extract_batch(model, collator, STORAGE_DTYPES[storage_dtype], padded, towers, batch),
                batched=True,
                batch_size=batch_size,
                # Rows are large (up to 2.5 MB in the paper variant): flush every batch instead of every 1000 rows.
                writer_batch_size=batch_size,
                remove_columns=[column for column in dataset.column_names if column not in kept],
                features=features,
                cache_file_name=str(folder / FEATURES_FILE),
                new_fingerprint=folder.name,
                load_from_cache_file=False,
                desc="Extracting frozen-tower features",
            )
    finally:
        model.train(was_training)


__all__ = [
    "CACHE_FORMAT_VERSION",
    "TOWERS",
    "frozen_towers",
    "CachedFeatureCollator",
    "STORAGE_DTYPES",
    "cache_features",
    "cache_fingerprint",
    "cache_fingerprint_parts",
    "extract_features",
    "load_feature_cache",
    "processor_settings",
    "weights_digest",
]
