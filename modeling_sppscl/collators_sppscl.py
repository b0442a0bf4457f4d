"""Data collators of SPP-SCL: raw image-text rows, or rows of the frozen-tower feature cache, into model batches.

Grouping by length: `Trainer` groups rows of similar length when `TrainingArguments(train_sampling_strategy=
"group_by_length")` is set (transformers >= 5 replaced the former `group_by_length=True` by this option); it reads
the token counts from the dataset's `length` column (`length_column_name`). Rows of the feature cache carry that
column already; add it to raw rows with [`add_length_column`]. With dynamic padding (default variant) this cuts
the padding each batch carries; in the paper variant every text is padded to 202 positions, so grouping changes
nothing there.
"""

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import Dataset

from .processing_sppscl import SppSclProcessor, load_image


Row = Mapping[str, Any]


def _row_name(row: Row, index: int) -> str:
    return f"row {str(row['id'])!r}" if row.get("id") is not None else f"row {index} of the batch"


def _labels_tensor(rows: Sequence[Row]) -> torch.Tensor | None:
    """The batch's labels, or None when no row has one (prediction); a batch mixing both is an error."""
    has_label = [row.get("label") is not None for row in rows]
    if not any(has_label):
        return None
    if not all(has_label):
        missing = next(index for index, present in enumerate(has_label) if not present)
        raise ValueError(f"{_row_name(rows[missing], missing)} has no label while others of its batch have one")
    return torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)


class ImageTextCollator:
    """Tokenizes the texts and prepares the images of dataset rows (`id`, `text`, `image`, `label`).

    `image` may be a file path, a PIL image, an array or bytes (see `load_image`); None stands for a missing
    image and is replaced by a black image of `blank_image_size` (width, height). Errors name the row's `id`.

    Returns `input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer makes them), `pixel_values`
    and, when the rows have labels, `labels`.
    """

    def __init__(self, processor: SppSclProcessor, blank_image_size: tuple[int, int] = (224, 224)):
        self.processor = processor
        self.blank_image_size = tuple(blank_image_size)

    def _text(self, row: Row, index: int) -> str:
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{_row_name(row, index)}: the text is empty or not a string: {text!r}")
        return text

    def blank_image(self) -> PIL.Image.Image:
        """The black image standing in for a missing one."""
        return PIL.Image.new("RGB", self.blank_image_size)

    def _image(self, row: Row, index: int) -> PIL.Image.Image:
        image = row.get("image")
        if image is None:
            return self.blank_image()
        source = image if isinstance(image, str) else type(image).__name__
        return load_image(image, name=f"{_row_name(row, index)} ({source})")

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        texts = [self._text(row, index) for index, row in enumerate(rows)]
        images = [self._image(row, index) for index, row in enumerate(rows)]
        batch = dict(self.processor.tokenize(texts, return_tensors="pt"))
        batch["pixel_values"] = self.processor.preprocess_images(images, return_tensors="pt")["pixel_values"]
        labels = _labels_tensor(rows)
        if labels is not None:
            batch["labels"] = labels
        return batch


class CachedFeatureCollator:
    """Stacks rows of the frozen-tower feature cache (see `extract_features`) into a head-only batch.

    Each row holds `text_hidden_states` (flat, `text_shape` = `[k, n, H]`), optionally `attention_mask` (`[n]`,
    stored in the paper variant where the `n` positions include padding), `image_features` (`[C, h, w]`) and
    `label`. Texts are padded with zeros to the longest of the batch, or to `pad_to` positions. The padded
    positions are masked out in the default variant, so their values change nothing; the paper variant's cache
    already holds every text at its fixed padded length, so nothing is padded there.

    Returns `text_hidden_states` `[k, B, L, H]`, `attention_mask` `[B, L]`, `image_features` `[B, C, h, w]`
    (float32) and, when the rows have labels, `labels`.
    """

    def __init__(self, pad_to: int | None = None):
        if pad_to is not None and pad_to < 3:
            raise ValueError(f"CachedFeatureCollator.pad_to must be >= 3 (summary token, text, separator), got {pad_to}")
        self.pad_to = pad_to

    def _padded_length(self, rows: Sequence[Row], shapes: list[tuple[int, int, int]]) -> int:
        longest = max(shape[1] for shape in shapes)
        if self.pad_to is None:
            return longest
        if longest > self.pad_to:
            index = next(i for i, shape in enumerate(shapes) if shape[1] == longest)
            raise ValueError(f"{_row_name(rows[index], index)} has {longest} text positions, more than pad_to={self.pad_to}")
        return self.pad_to

    @staticmethod
    def _row_mask(row: Row, positions: int) -> torch.Tensor:
        mask = row.get("attention_mask")
        if mask is None:
            return torch.ones(positions, dtype=torch.long)
        return torch.as_tensor(np.asarray(mask), dtype=torch.long)

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        shapes = [tuple(int(size) for size in row["text_shape"]) for row in rows]
        if len({(k, h) for k, _, h in shapes}) != 1:
            raise ValueError(f"The rows of one batch have different text layers or widths: {sorted(set(shapes))}")
        num_layers, _, hidden_size = shapes[0]
        length = self._padded_length(rows, shapes)
        hidden = torch.zeros(num_layers, len(rows), length, hidden_size)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        with warnings.catch_warnings():
            # The cache's arrays are read-only memory maps; they are only read, so torch's warning does not apply.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for index, (row, shape) in enumerate(zip(rows, shapes)):
                # Stored half-precision features are upcast here: torch converts far faster than numpy does.
                hidden[:, index, : shape[1]] = torch.as_tensor(np.asarray(row["text_hidden_states"])).view(shape)
                attention_mask[index, : shape[1]] = self._row_mask(row, shape[1])
            image_features = torch.as_tensor(np.stack([np.asarray(row["image_features"]) for row in rows])).float()
        batch = {
            "text_hidden_states": hidden,
            "attention_mask": attention_mask,
            "image_features": image_features,
        }
        labels = _labels_tensor(rows)
        if labels is not None:
            batch["labels"] = labels
        return batch


def add_length_column(dataset: Dataset, processor: SppSclProcessor, batch_size: int = 1000) -> Dataset:
    """`dataset` with a `length` column: each text's token count after truncation (for grouping by length)."""

    def token_counts(batch: dict[str, list]) -> dict[str, list[int]]:
        encoded = processor.tokenizer(batch["text"], truncation=True, max_length=processor.text_max_length)
        return {"length": [len(ids) for ids in encoded["input_ids"]]}

    return dataset.map(token_counts, batched=True, batch_size=batch_size, desc="Counting tokens")


__all__ = ["CachedFeatureCollator", "ImageTextCollator", "add_length_column"]
