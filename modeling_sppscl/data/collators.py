"""Data collator of SPP-SCL for raw image-text rows (the feature cache has its own, beside its schema).

Grouping by length: `Trainer` groups rows of similar length when `TrainingArguments(train_sampling_strategy=
"group_by_length")` is set (transformers >= 5 replaced the former `group_by_length=True` by this option); it reads
the token counts from the dataset's `length` column (`length_column_name`). Rows of the feature cache carry that
column already; add it to raw rows with [`add_length_column`]. With dynamic padding (default variant) this cuts
the padding each batch carries; in the paper variant every text is padded to 202 positions, so grouping changes
nothing there.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import PIL.Image
import torch
from datasets import Dataset

from ..processing_sppscl import SppSclProcessor, load_image, text_problems
from .validation import blank_image


Row = Mapping[str, Any]


def row_name(row: Row, index: int) -> str:
    return f"row {str(row['id'])!r}" if row.get("id") is not None else f"row {index} of the batch"


def labels_tensor(rows: Sequence[Row]) -> torch.Tensor | None:
    """The batch's labels, or None when no row has one (prediction); a batch mixing both is an error."""
    has_label = [row.get("label") is not None for row in rows]
    if not any(has_label):
        return None
    if not all(has_label):
        missing = next(index for index, present in enumerate(has_label) if not present)
        raise ValueError(f"{row_name(rows[missing], missing)} has no label while others of its batch have one")
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
        problem = text_problems([text]).get(0)
        if problem is not None:
            raise ValueError(f"{row_name(row, index)}: the text {problem}: {text!r}")
        return text

    def blank_image(self) -> PIL.Image.Image:
        """The black image standing in for a missing one, at this collator's size."""
        return blank_image(self.blank_image_size)

    def _image(self, row: Row, index: int) -> PIL.Image.Image:
        image = row.get("image")
        if isinstance(image, dict):  # a `datasets.Image` value read undecoded: its bytes, or its file
            image = image.get("bytes") or image.get("path")
        if image is None:
            return self.blank_image()
        source = image if isinstance(image, str) else type(image).__name__
        return load_image(image, name=f"{row_name(row, index)} ({source})")

    def decoded_images(self, rows: Sequence[Row]) -> tuple[list[PIL.Image.Image], list[str | None]]:
        """The rows' images, an unreadable one replaced by the blank image, and why each was replaced (None: read)."""
        images, problems = [], []
        for index, row in enumerate(rows):
            try:
                images.append(self._image(row, index))
                problems.append(None)
            except ValueError as error:
                images.append(self.blank_image())
                problems.append(str(error))
        return images, problems

    def text_inputs(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        """`input_ids`, `attention_mask` (and `token_type_ids`) of the rows' texts."""
        texts = [self._text(row, index) for index, row in enumerate(rows)]
        return dict(self.processor.tokenize(texts, return_tensors="pt"))

    def image_inputs(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        """`pixel_values` of the rows' images."""
        images = [self._image(row, index) for index, row in enumerate(rows)]
        return {"pixel_values": self.processor.preprocess_images(images, return_tensors="pt")["pixel_values"]}

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        batch = {**self.text_inputs(rows), **self.image_inputs(rows)}
        labels = labels_tensor(rows)
        if labels is not None:
            batch["labels"] = labels
        return batch


def add_length_column(dataset: Dataset, processor: SppSclProcessor, batch_size: int = 1000) -> Dataset:
    """`dataset` with a `length` column: each text's token count after truncation (for grouping by length)."""

    def token_counts(batch: dict[str, list]) -> dict[str, list[int]]:
        encoded = processor.tokenizer(batch["text"], truncation=True, max_length=processor.text_max_length)
        return {"length": [len(ids) for ids in encoded["input_ids"]]}

    return dataset.map(token_counts, batched=True, batch_size=batch_size, desc="Counting tokens")


__all__ = ["ImageTextCollator", "add_length_column"]
