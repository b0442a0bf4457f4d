"""Running the frozen towers over a dataset and writing each tower's outputs as one Arrow file (see `feature_cache`).

The rows are read, tokenized and their images decoded by a torch `DataLoader` whose workers run the
[`ImageTextCollator`] in parallel, so that an accelerator is not left waiting on the host; the towers run on the
device given (the one training will use), under autocast in bfloat16/float16 where asked; the outputs are written
batch by batch with `datasets`' `ArrowWriter`, so a file is never held in memory whole. The towers extracted
together share one pass over the rows.
"""

import os
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import DataLoader
from transformers.utils.logging import tqdm

from ..modeling_sppscl import SppSclModel
from .cache_format import tower_features
from .collators import ImageTextCollator


TOWERS = ("text", "vision")
# The raw column each tower reads: a one-tower cache keeps the one of the tower that is not cached.
RAW_COLUMNS = {"text": "text", "vision": "image"}
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """`"auto"`: bfloat16 on a CUDA device that has it (float16 on older ones), float32 elsewhere."""
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"precision must be 'auto' or one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def default_num_workers(device: torch.device) -> int:
    """Image-decoding workers: on an accelerator the host's cores are free for them; on a CPU the towers use them."""
    return 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))


class _ExtractionInputs:
    """Collate function of the extraction `DataLoader` (runs in its workers): the rows' ids, and the inputs of the
    towers extracted: the tokenized texts, the decoded and preprocessed images. This decode is the run's only one
    of each image, so an image that does not decode is recorded (`image_problems`) and the blank image stands in."""

    def __init__(self, collator: ImageTextCollator, towers: tuple[str, ...]):
        self.collator, self.towers = collator, towers

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = {"ids": [str(row.get("id", "")) for row in rows], "text_inputs": None, "pixel_values": None}
        if "text" in self.towers:
            batch["text_inputs"] = self.collator.text_inputs(rows)
        if "vision" in self.towers:
            images, batch["image_problems"] = self.collator.decoded_images(rows)
            batch["pixel_values"] = self.collator.processor.preprocess_images(images, return_tensors="pt")["pixel_values"]
        return batch


def _check_finite(features: torch.Tensor, ids: list[str], storage: torch.dtype, precision: str) -> None:
    bad = ~features.isfinite().flatten(1).all(dim=1)
    if bad.any():
        names = [row_id for row_id, is_bad in zip(ids, bad.tolist()) if is_bad]
        hint = ""
        if storage == torch.float16:
            hint += " (beyond float16's range: use storage_dtype='float32')"
        if precision != "float32":
            hint += f" (the towers may overflow in {precision}: extract with precision='float32')"
        raise ValueError(f"The towers gave non-finite features for rows {names}{hint}")


class TowerRunner:
    """The cached towers of `model` on `device`, under autocast at `precision`, giving rows of `tower_features`."""

    def __init__(self, model: SppSclModel, towers: tuple[str, ...], device: torch.device, storage_dtype: str, precision: str):
        self.model, self.towers, self.device, self.precision = model, towers, device, precision
        self.storage = STORAGE_DTYPES[storage_dtype]
        self.padded = model.config.text_pooling == "padded_mean"

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    def feature_map_shape(self, collator: ImageTextCollator) -> tuple[int, int, int]:
        """`[C, h, w]` of the vision tower's map, read from one blank image (Array3D needs it up front)."""
        pixels = collator.processor.preprocess_images([collator.blank_image()])["pixel_values"]
        with self._autocast():
            return tuple(self.model.vision_tower_features(pixels.to(self.device)).shape[1:])

    def _text_columns(self, text_inputs: dict[str, torch.Tensor], ids: list[str]) -> dict[str, list]:
        inputs = {name: tensor.to(self.device, non_blocking=True) for name, tensor in text_inputs.items()}
        with self._autocast():
            hidden = self.model.text_tower_hidden_states(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
        hidden = hidden.to("cpu", self.storage).transpose(0, 1).contiguous()  # [B, k, L, H]
        _check_finite(hidden, ids, self.storage, self.precision)
        mask = text_inputs["attention_mask"]
        texts = [sample if self.padded else sample[:, sample_mask.bool()] for sample, sample_mask in zip(hidden, mask)]
        columns = {"text_shape": [list(text.shape) for text in texts], "text_hidden_states": [text.reshape(-1).numpy() for text in texts]}
        if self.padded:
            columns["attention_mask"] = list(mask.to(torch.int8).numpy())
        return columns

    def __call__(self, batch: dict[str, Any]) -> dict[str, dict[str, list]]:
        """Each tower's columns for the batch."""
        columns = {}
        if batch["text_inputs"] is not None:
            columns["text"] = self._text_columns(batch["text_inputs"], batch["ids"])
        if batch["pixel_values"] is not None:
            with self._autocast():
                images = self.model.vision_tower_features(batch["pixel_values"].to(self.device, non_blocking=True))
            images = images.to("cpu", self.storage)
            _check_finite(images, batch["ids"], self.storage, self.precision)
            columns["vision"] = {"image_features": list(images.numpy()), "image_problem": batch["image_problems"]}
        return columns


def write_features(
    model: SppSclModel,
    dataset: Dataset,
    paths: dict[str, Path],
    collator: ImageTextCollator,
    batch_size: int,
    storage_dtype: str,
    device: torch.device,
    precision: str,
    num_workers: int,
    description: str = "Extracting frozen-tower features",
) -> None:
    """Run the towers named by `paths` ("text", "vision") on `device` over `dataset`, in one pass, and write each
    tower's outputs to its Arrow file.

    The model is moved to `device` (training moves it there anyway) and left in the train/eval mode it had. A
    progress bar labelled `description` counts the pairs (transformers' tqdm: off after
    `transformers.utils.logging.disable_progress_bar()`, which `--disable_tqdm` calls).
    """
    towers = tuple(name for name in TOWERS if name in paths)
    # Images are decoded by the collator's `load_image` alone, from their bytes or file.
    if isinstance(dataset.features.get("image"), ImageFeature):
        dataset = dataset.cast_column("image", ImageFeature(decode=False))
    columns = [column for column in ("id", *(RAW_COLUMNS[name] for name in towers)) if column in dataset.column_names]
    loader = DataLoader(
        dataset.select_columns(columns), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_ExtractionInputs(collator, towers), pin_memory=device.type == "cuda", persistent_workers=False,
    )
    runner = TowerRunner(model.to(device), towers, device, storage_dtype, precision)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), ExitStack() as stack:
            shape = runner.feature_map_shape(collator) if "vision" in towers else None
            # Rows are large (up to 2.5 MB in the paper variant): flush every batch instead of every 1000 rows.
            writers = {
                name: stack.enter_context(ArrowWriter(features=tower_features(name, storage_dtype, shape, runner.padded),
                                                      path=str(paths[name]), writer_batch_size=batch_size))
                for name in towers
            }
            progress = stack.enter_context(tqdm(total=len(dataset), desc=description, unit="pair"))
            for batch in loader:
                for name, tower_columns in runner(batch).items():
                    writers[name].write_batch(tower_columns)
                progress.update(len(batch["ids"]))
            for writer in writers.values():
                writer.finalize()
    finally:
        model.train(was_training)


__all__ = ["PRECISIONS", "RAW_COLUMNS", "STORAGE_DTYPES", "TOWERS", "resolve_precision", "write_features"]
