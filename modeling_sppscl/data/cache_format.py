"""The rows of the feature cache: their Arrow schema, and their decoding into batches (cached tower outputs, and
for a one-tower cache the other tower's raw inputs)."""

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Array3D, Features, List, Value

from .collators import ImageTextCollator, Row, labels_tensor, row_name


def tower_features(tower: str, storage_dtype: str, feature_map_shape: tuple[int, int, int] | None = None, padded: bool = False) -> Features:
    """Arrow schema of a tower's cache: the text tower's `text_shape`, `text_hidden_states` (and `attention_mask`
    when `padded`), or the vision tower's `image_features` of `feature_map_shape` and `image_problem` (why the
    image did not decode, its features being the blank image's; None when it did)."""
    if tower == "vision":
        return Features({"image_features": Array3D(feature_map_shape, storage_dtype), "image_problem": Value("string")})
    columns = {"text_shape": List(Value("int32"), length=3), "text_hidden_states": List(Value(storage_dtype))}
    if padded:
        columns["attention_mask"] = List(Value("int8"))
    return Features(columns)


class CachedFeatureCollator:
    """Stacks rows of the feature cache (see `extract_features`) into a batch for [`SppSclModel`].

    A row of the text cache holds `text_hidden_states` (flat, `text_shape` = `[k, n, H]`) and optionally
    `attention_mask` (`[n]`, stored in the paper variant where the `n` positions include padding); a row of the
    vision cache holds `image_features` (`[C, h, w]`). Texts are padded with zeros to the longest of the batch, or
    to `pad_to` positions. The padded positions are masked out in the default variant, so their values change
    nothing; the paper variant's cache already holds every text at its fixed padded length, so nothing is padded
    there.

    A one-tower cache (one tower trainable) keeps the other modality raw (`text` or `image`): `raw_inputs`, the
    [`ImageTextCollator`] training would use, turns it into `input_ids`/`attention_mask` or `pixel_values`, and
    the trainable tower runs on them at every step.

    Returns `text_hidden_states` `[k, B, L, H]` with `attention_mask` `[B, L]` (or the raw text inputs),
    `image_features` `[B, C, h, w]` (or `pixel_values`), float32, and, when the rows have labels, `labels`.
    """

    def __init__(self, pad_to: int | None = None, raw_inputs: ImageTextCollator | None = None):
        if pad_to is not None and pad_to < 3:
            raise ValueError(f"CachedFeatureCollator.pad_to must be >= 3 (summary token, text, separator), got {pad_to}")
        self.pad_to = pad_to
        self.raw_inputs = raw_inputs

    def _padded_length(self, rows: Sequence[Row], shapes: list[tuple[int, int, int]]) -> int:
        longest = max(shape[1] for shape in shapes)
        if self.pad_to is None:
            return longest
        if longest > self.pad_to:
            index = next(i for i, shape in enumerate(shapes) if shape[1] == longest)
            raise ValueError(f"{row_name(rows[index], index)} has {longest} text positions, more than pad_to={self.pad_to}")
        return self.pad_to

    @staticmethod
    def _row_mask(row: Row, positions: int) -> torch.Tensor:
        mask = row.get("attention_mask")
        if mask is None:
            return torch.ones(positions, dtype=torch.long)
        return torch.as_tensor(np.asarray(mask), dtype=torch.long)

    def _cached_text(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        shapes = [tuple(int(size) for size in row["text_shape"]) for row in rows]
        if len({(k, h) for k, _, h in shapes}) != 1:
            raise ValueError(f"The rows of one batch have different text layers or widths: {sorted(set(shapes))}")
        num_layers, _, hidden_size = shapes[0]
        length = self._padded_length(rows, shapes)
        hidden = torch.zeros(num_layers, len(rows), length, hidden_size)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for index, (row, shape) in enumerate(zip(rows, shapes)):
            # Stored half-precision features are upcast here: torch converts far faster than numpy does.
            hidden[:, index, : shape[1]] = torch.as_tensor(np.asarray(row["text_hidden_states"])).view(shape)
            attention_mask[index, : shape[1]] = self._row_mask(row, shape[1])
        return {"text_hidden_states": hidden, "attention_mask": attention_mask}

    def _raw(self, rows: Sequence[Row], modality: str) -> dict[str, torch.Tensor]:
        if self.raw_inputs is None:
            cached = "text_hidden_states" if modality == "text" else "image_features"
            raise ValueError(
                f"{row_name(rows[0], 0)} has no cached {cached}: this is a one-tower cache, so the {modality} must "
                f"be read raw; pass CachedFeatureCollator(raw_inputs=ImageTextCollator(processor))"
            )
        return self.raw_inputs.text_inputs(rows) if modality == "text" else self.raw_inputs.image_inputs(rows)

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            # The cache's arrays are read-only memory maps; they are only read, so torch's warning does not apply.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            batch = self._cached_text(rows) if "text_hidden_states" in rows[0] else self._raw(rows, "text")
            if "image_features" in rows[0]:
                batch["image_features"] = torch.as_tensor(np.stack([np.asarray(row["image_features"]) for row in rows])).float()
            else:
                batch.update(self._raw(rows, "image"))
        labels = labels_tensor(rows)
        if labels is not None:
            batch["labels"] = labels
        return batch


__all__ = ["CachedFeatureCollator", "tower_features"]
