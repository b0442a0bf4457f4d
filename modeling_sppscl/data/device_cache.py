"""Feature cache held in accelerator memory: a training batch is an index selection on device tensors.

From the on-disk cache, each step reads its rows from the memory-mapped Arrow file and stacks them on the host,
then copies ~190 MB (paper variant, batch 64) to the accelerator. [`DeviceFeatureCache`] copies a split's features
to the device once; the `Trainer` (or any loop over a `DataLoader`) then iterates an index dataset (`sample_index`,
`label`, `length`, `id`), whose collator ([`DeviceCacheCollator`]) returns the batch's features as `index_select`s
on the device tensors: ordinary batches, already on the device. Sampling (shuffling, grouping by length, one
shard per process) stays the `Trainer`'s own. The collator must run in the process that holds the device tensors:
`DataLoader(num_workers=0, pin_memory=False)` (device tensors cannot be pinned, nor shared with worker processes).

Texts are stored padded to the longest text of the split, with their mask; a batch is cut to its own longest text
(known on the host, so no device sync), which is exactly what [`CachedFeatureCollator`] builds, so the head sees
the same tensors. Features keep their storage dtype on the device and are upcast to float32 per batch, as the
collator does.
"""

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import get_worker_info

from .cache_format import CachedFeatureCollator
from .collators import Row, labels_tensor


# The column naming the cache of a row (one collator serves the splits' caches).
CACHE_KEY = "device_feature_cache"


def device_bytes(cache: Dataset) -> int:
    """Bytes a [`DeviceFeatureCache`] of `cache` takes on the device (texts padded to the split's longest)."""
    shapes = np.asarray(cache.with_format("numpy")["text_shape"])
    num_layers, longest, hidden = int(shapes[0, 0]), int(shapes[:, 1].max()), int(shapes[0, 2])
    itemsize = np.dtype(cache.features["text_hidden_states"].feature.dtype).itemsize
    image_values = int(np.prod(cache.features["image_features"].shape))
    return len(cache) * itemsize * (num_layers * longest * hidden + image_values) + len(cache) * longest


def fits_on_device(caches: Sequence[Dataset], device: torch.device, share: float = 0.5) -> bool:
    """Whether the caches together take at most `share` of the device's free memory (CUDA only; `auto` keeps the
    memory-mapped host cache on a CPU, where it is already in memory)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return sum(device_bytes(cache) for cache in caches) <= share * free


class DeviceFeatureCache:
    """The features of a two-tower cache split (see `extract_features`) as tensors on `device`.

    Holds `text_hidden_states` `[k, N, L, H]` (zero-padded to the longest text `L`), `attention_mask` `[N, L]`,
    `image_features` `[N, C, h, w]`, all in the cache's storage dtype, and on the host the text positions of each
    sample. `batch(indices)` gives what [`CachedFeatureCollator`] gives for those rows.
    """

    def __init__(self, cache: Dataset, device: torch.device | str, chunk_size: int = 256):
        missing = {"text_hidden_states", "image_features"} - set(cache.column_names)
        if missing:
            raise ValueError(f"A device feature cache needs both towers cached; this cache has no {sorted(missing)}")
        self.device = torch.device(device)
        self.key = uuid.uuid4().hex
        rows = cache.with_format("numpy", dtype=None)
        self.positions = np.asarray(rows["text_shape"])[:, 1].astype(np.int64)
        storage = np.dtype(cache.features["text_hidden_states"].feature.dtype)
        dtype = torch.float16 if storage == np.float16 else torch.float32
        collator = CachedFeatureCollator(pad_to=int(self.positions.max()))
        parts = {"text_hidden_states": [], "attention_mask": [], "image_features": []}
        for first in range(0, len(rows), chunk_size):
            chunk = collator(rows.__getitems__(list(range(first, min(first + chunk_size, len(rows))))))
            for name, values in parts.items():
                # Exact: float16 features were upcast by the collator and go back to float16 unchanged.
                values.append(chunk[name].to(self.device, dtype if chunk[name].is_floating_point() else None))
        self.text_hidden_states = torch.cat(parts["text_hidden_states"], dim=1)
        self.attention_mask = torch.cat(parts["attention_mask"])
        self.image_features = torch.cat(parts["image_features"])
        self.labels = list(rows["label"]) if "label" in rows.column_names else None
        self.ids = [str(row_id) for row_id in rows["id"]]
        self.lengths = [int(length) for length in rows["length"]]

    def __len__(self) -> int:
        return len(self.ids)

    def index_dataset(self) -> Dataset:
        """The rows the `Trainer` iterates: `sample_index`, `id`, `label`, `length` (for grouping by length)."""
        columns = {"sample_index": list(range(len(self))), "id": self.ids, "length": self.lengths, CACHE_KEY: [self.key] * len(self)}
        if self.labels is not None:
            columns["label"] = [int(label) for label in self.labels]
        return Dataset.from_dict(columns)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's inputs for `indices` (a host tensor): index selections on the device, cut to the longest
        text of the batch and upcast to float32."""
        length = int(self.positions[indices.numpy()].max())
        on_device = indices.to(self.device, non_blocking=True)
        return {
            "text_hidden_states": self.text_hidden_states[:, :, :length].index_select(1, on_device).float(),
            "attention_mask": self.attention_mask[:, :length].index_select(0, on_device),
            "image_features": self.image_features.index_select(0, on_device).float(),
        }


class DeviceCacheCollator:
    """Collator of [`DeviceFeatureCache.index_dataset`] rows: the features of the rows, selected on the device (what
    [`CachedFeatureCollator`] gives for them, on the device), and their labels."""

    def __init__(self, caches: Sequence[DeviceFeatureCache]):
        self.caches = {cache.key: cache for cache in caches}

    def __call__(self, rows: Sequence[Row]) -> dict[str, Any]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "DeviceCacheCollator ran in a DataLoader worker: its features are tensors on the device, held by the "
                "training process; use num_workers=0 (--dataloader_num_workers 0)"
            )
        keys = {row[CACHE_KEY] for row in rows}
        if len(keys) != 1:
            raise ValueError(f"A batch mixes rows of {len(keys)} device caches")
        batch = self.caches[keys.pop()].batch(torch.tensor([int(row["sample_index"]) for row in rows]))
        labels = labels_tensor(rows)
        if labels is not None:
            batch["labels"] = labels.to(batch["image_features"].device)
        return batch


__all__ = ["DeviceCacheCollator", "DeviceFeatureCache", "device_bytes", "fits_on_device"]
