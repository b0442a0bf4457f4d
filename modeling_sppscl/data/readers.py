"""Readers of image-text classification data: thin adapters over `datasets`' builders, each returning `LoadedData`.

Every reader gives a `datasets.DatasetDict` whose splits are `train`, `validation` and `test` (only those the
source has), with the columns

- `id` (str),
- `text` (str, never empty),
- `image`: the resolved path of the image file (str), or `None` where the pair has no usable image (text-only
  data, or `missing_image="blank"`); `load_datasets_dataset` keeps an `Image()` column as it is, so there the
  column holds PIL images (or `None`). Consumers must therefore accept a path, a PIL image or `None`:
  `load_image` reads the first two, `blank_image` stands in for the third.
- `label` (int, a `ClassLabel` feature carrying the label names).

Files are parsed by `datasets.load_dataset`: CSV / TSV by the "csv" builder (every column read as a string, so
ids such as `007` and texts such as `NA` stay as written), JSON Lines and JSON lists (CLMLF's split files too)
by the "json" builder, HFM's text files by the "text" builder and `ast.literal_eval` per line. A file that is
not valid UTF-8 is still read: undecodable bytes become U+FFFD (the valid parts, emoji included, stay intact)
and the file is named in a warning and in the report. Errors name the file and the row as "line N" (CSV:
where the record starts; lines holding no value are skipped and counted), "item N" (JSON lists) or "row N" (datasets
datasets), with the id. Each format becomes a `Dataset` of raw rows (`validation.raw_features`: id, text, label as
read, image, where); `labels` matches the labels of every split to one label set; `validation` checks texts and
images and applies the policies in one pass; image paths must stay inside the data folder (see `image_in_folder`).
"""

import ast
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from ..processing_sppscl import load_image
from .builders import class_label_names, csv_line_locator, open_datasets_dataset, read_csv_as_strings, read_with_builder
from .labels import HFM_LABEL_NAMES, MVSA_LABEL_NAMES, clmlf_label_names
from .validation import SPLIT_ORDER, LoadedData, ReadOptions, as_read, blank_image, build_loaded_data, new_report, no_rows, raw_features, whole_batch


logger = logging.getLogger(__name__)

CLMLF_IMAGE_FOLDERS = ("images", "dataset_image")

PathLike = str | os.PathLike
# Where a row is, from its index in its file: "line N", "item N", "row N".
Locator = Callable[[int], str]
# A row's image from its image column's value, its id and where it is.
ImageOf = Callable[[Any, str, str], Any]


# ---------------------------------------------------------------- public readers


def load_clmlf_folder(data_dir: PathLike, *, require_images: bool = True, image_dir: PathLike | None = None, **options: Any) -> LoadedData:
    """A folder in CLMLF's layout: `train.json`, `dev.json` or `valid.json` (the validation split), `test.json`,
    each a JSON list of `{"id", "text", "emotion_label"}`, and the images as `images/{id}.jpg` or
    `dataset_image/{id}.jpg` (any case, e.g. `Images/`; or in `image_dir`). `options`: see `ReadOptions`.

    Without `label_names`, labels 0..2 are MVSA's (positive, neutral, negative) and 0..1 HFM's (not_sarcastic,
    sarcastic): a label 2 in any split means MVSA; labels 0 and 1 alone fit both (MVSA without its negative
    class), so the folder's name decides (`mvsa...` or `hfm...`/`...sarcasm...`), else `label_names` is needed.
    Without an image folder, `require_images=False` loads the texts alone (every image `None`); by default that
    is an error. An id that would name a file outside the image folder (`../x`) is refused unless
    `allow_images_outside_data_dir`.
    """
    settings = ReadOptions(**options)
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLMLF data folder not found: {folder}")
    files = clmlf_split_files(folder)
    images = clmlf_image_folder(folder, image_dir, require_images)
    report = new_report(files, settings, text_only=images is None, source=str(folder))
    raw = {split: read_clmlf_json(path, split, images, report) for split, path in files.items()}
    return build_loaded_data(raw, settings, report, settings.label_names or clmlf_label_names(raw, folder))


def load_hfm_text_files(
    train_file: PathLike | None, validation_file: PathLike | None = None, test_file: PathLike | None = None,
    image_dir: PathLike | None = None, **options: Any,
) -> LoadedData:
    """HFM's original text files: one Python-literal list per line, `[id, text, label]` in the training file and
    `[id, text, hashtag_label, human_label]` in the validation and test files, where the last (human) label
    counts. Images are `image_dir/{id}.jpg`; without `image_dir` the data is text-only (every image `None`).
    `options`: see `ReadOptions`."""
    settings = ReadOptions(**options)
    images = Path(image_dir).resolve() if image_dir is not None else None
    if images is not None and not images.is_dir():
        raise FileNotFoundError(f"HFM image folder not found: {images}")
    files = given_split_files(train_file, validation_file, test_file)
    report = new_report(files, settings, text_only=images is None)
    raw = {split: read_hfm_lines(path, split, images, report) for split, path in files.items()}
    return build_loaded_data(raw, settings, report, settings.label_names or HFM_LABEL_NAMES)


def load_csv_or_jsonl(
    train_file: PathLike | None = None, validation_file: PathLike | None = None, test_file: PathLike | None = None,
    image_column: str | None = "image", text_column: str = "text", label_column: str = "label", id_column: str | None = None,
    **options: Any,
) -> LoadedData:
    """CSV (`.csv`, `.tsv`) or JSON (`.jsonl`, or `.json` holding JSON lines or one list) files, one per split.
    `options`: see `ReadOptions`.

    Image paths are resolved against the folder of their file; an empty one counts as a missing image;
    `image_column=None` reads text-only data. Ids come from `id_column`, else from an `id` column if there is one,
    else they are `<split>-<row>`. Labels may be ids or names: with `label_names`, a label is one of the names or
    an id; without, the training split's labels make the label set (integer labels are ids named "0", "1", ...,
    other labels are names, sorted), and ids in one split with names in another are refused (see `labels`).
    An image path that leads outside its file's folder (`../`, absolute) is refused unless
    `allow_images_outside_data_dir`.
    """
    settings = ReadOptions(**options)
    files = given_split_files(train_file, validation_file, test_file)
    report = new_report(files, settings, text_only=image_column is None)
    columns = {"image": image_column, "text": text_column, "label": label_column, "id": id_column}
    raw = {split: read_table_file(path, split, columns, report) for split, path in files.items()}
    return build_loaded_data(raw, settings, report)


def load_datasets_dataset(
    name_or_path: str,
    image_column: str | None = "image", text_column: str = "text", label_column: str = "label", id_column: str | None = None,
    **options_and_load_kwargs: Any,
) -> LoadedData:
    """A `datasets` dataset: a folder written by `save_to_disk`, or anything `datasets.load_dataset` takes (a Hub
    id or a local loading script; the keywords that are not `ReadOptions` go to it). Splits named train /
    validation, valid, dev, val / test are kept.

    An `Image()` image column stays an `Image()` column (PIL images for consumers); a string column holds paths,
    resolved against a local dataset's folder. A `ClassLabel` label column gives the label names. Ids and labels
    otherwise follow `load_csv_or_jsonl`. The result is rebuilt in memory (images as their encoded bytes).
    """
    settings = ReadOptions.take(options_and_load_kwargs)
    dataset = open_datasets_dataset(name_or_path, **options_and_load_kwargs)
    base = Path(name_or_path).resolve() if Path(name_or_path).exists() else None
    sources = {split: f"{name_or_path}, split {split}" for split in dataset}
    report = new_report(sources, settings, text_only=image_column is None, source=name_or_path)
    columns = {"image": image_column, "text": text_column, "label": label_column, "id": id_column}
    raw = {split: read_table(part, sources[split], split, columns, lambda index: f"row {index}", table_images(base, split, report), report)
           for split, part in dataset.items()}
    return build_loaded_data(raw, settings, report, class_label_names(dataset, label_column, settings.label_names))


# ---------------------------------------------------------------- locating files


def clmlf_split_files(folder: Path) -> dict[str, Path]:
    """The split files of a CLMLF folder, by our split names."""
    candidates = {"train": ["train.json"], "validation": ["dev.json", "valid.json"], "test": ["test.json"]}
    files = {}
    for split, names in candidates.items():
        present = [folder / name for name in names if (folder / name).is_file()]
        if len(present) > 1:
            raise ValueError(f"{folder} has both {present[0].name} and {present[1].name}; keep one validation file")
        if present:
            files[split] = present[0]
    if not files:
        raise FileNotFoundError(f"{folder} has none of train.json, dev.json, valid.json, test.json")
    return files


def clmlf_image_folder(folder: Path, image_dir: PathLike | None, require_images: bool) -> Path | None:
    """The folder holding `{id}.jpg` (its name in any case); `None` for text-only data (allowed only when images
    are not required)."""
    if image_dir is not None:
        if not Path(image_dir).is_dir():
            raise FileNotFoundError(f"image folder not found: {image_dir}")
        return Path(image_dir).resolve()
    found = {child.name.lower(): child for child in sorted(folder.iterdir()) if child.is_dir()}
    for name in CLMLF_IMAGE_FOLDERS:
        if name in found:
            return found[name].resolve()
    looked_for = " and ".join(name + "/" for name in CLMLF_IMAGE_FOLDERS)
    if require_images:
        raise FileNotFoundError(
            f"{folder} has no image folder (looked for {looked_for} in any case); "
            "pass require_images=False to load the texts alone (every image is then None)"
        )
    logger.warning("%s has no image folder (looked for %s in any case); loading the texts alone: every pair gets a blank image", folder, looked_for)
    return None


def given_split_files(train_file: PathLike | None, validation_file: PathLike | None, test_file: PathLike | None) -> dict[str, Path]:
    """The files given for each split; each must exist and at least one must be given."""
    files = {split: Path(path) for split, path in zip(SPLIT_ORDER, (train_file, validation_file, test_file)) if path is not None}
    if not files:
        raise ValueError("give at least one of train_file, validation_file, test_file")
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
    return files


# ---------------------------------------------------------------- rows of each format


def read_clmlf_json(path: Path, split: str, images: Path | None, report: dict) -> datasets.Dataset:
    """The rows of one CLMLF split file (a JSON list of `{"id", "text", "emotion_label"}`)."""
    dataset, text = read_with_builder(path, "json", report)
    if dataset is not None and not text.lstrip().startswith("["):
        raise ValueError(f"{path}: expected a JSON list of {{id, text, emotion_label}} objects")

    def image_of(_, row_id: str, where: str) -> str | None:
        if row_id == "None":
            raise ValueError(f"{where}: the id is missing (CLMLF names each image after its id)")
        return image_in_folder(f"{row_id}.jpg", images, split, where, report) if images is not None else None

    columns = {"id": "id", "text": "text", "label": "emotion_label", "image": None}
    return read_table(dataset, str(path), split, columns, lambda index: f"item {index}", image_of, report)


def read_hfm_lines(path: Path, split: str, images: Path | None, report: dict) -> datasets.Dataset:
    """The rows of one HFM text file: a Python list per line whose last element is the label that counts."""
    dataset, _ = read_with_builder(path, "text", report, encoding="utf-8-sig")

    def rows_of(lines: dict[str, list]) -> dict[str, list]:
        rows = {name: [] for name in raw_features()}
        for number, line in enumerate(lines["text"], start=1):
            if not line.strip():
                continue
            try:
                item = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError) as error:
                raise ValueError(f"{path}, line {number}: not a Python list literal ({error})") from error
            if not isinstance(item, (list, tuple)) or len(item) < 3:
                raise ValueError(f"{path}, line {number}: expected [id, text, label] or [id, text, hashtag_label, label], got {line[:200]}")
            where = f"{path}, line {number} (id {str(item[0])!r})"
            image = image_in_folder(f"{item[0]}.jpg", images, split, where, report) if images is not None else None
            add_row(rows, str(item[0]), item[1], item[-1], image, where)
        return rows

    return whole_batch(dataset, rows_of, raw_features(), f"Reading rows ({split})") if dataset is not None else no_rows()


def read_table_file(path: Path, split: str, columns: dict[str, str | None], report: dict) -> datasets.Dataset:
    """The rows of one CSV / TSV / JSON (lines or list) file, with image paths resolved against its folder."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        dataset, _ = read_csv_as_strings(path, "\t" if suffix == ".tsv" else ",", report)
        locate = csv_line_locator(dataset)
    elif suffix in (".json", ".jsonl"):
        dataset, text = read_with_builder(path, "json", report)
        is_list = text.lstrip().startswith("[")
        lines = [number for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
        locate = (lambda index: f"item {index}") if is_list else (lambda index: f"line {lines[index]}")
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")
    return read_table(dataset, str(path), split, columns, locate, table_images(path.parent.resolve(), split, report), report)


def read_table(
    part: datasets.Dataset | None, source: str, split: str, columns: dict[str, str | None], locate: Locator, image_of: ImageOf, report: dict
) -> datasets.Dataset:
    """The raw rows of one read table (none for `None`, a file holding no record); an `Image()` column is read
    undecoded ({bytes, path}); `image_of` makes each row's image; rows holding no value at all (blank CSV lines)
    are left out and counted. `locate(index)` names a row in messages."""
    if part is None:
        return no_rows()
    missing = [(role, name) for role, name in columns.items() if name and name not in part.column_names]
    if missing:
        role, name = missing[0]
        hint = "; pass image_column=None for text-only data" if role == "image" else ""
        where = f"{source}, {locate(0)}" if len(part) else source
        raise ValueError(f"{where}: no {role} column {name!r} (no column {name!r} among {part.column_names}){hint}")
    image_column = columns["image"]
    undecoded = image_column is not None and isinstance(part.features[image_column], datasets.Image)
    if undecoded:
        part = part.cast_column(image_column, datasets.Image(decode=False))
    id_column = columns["id"] or ("id" if "id" in part.column_names else None)

    def rows_of(table: dict[str, list]) -> dict[str, list]:
        rows = {name: [] for name in raw_features()}
        blank = 0
        for index, values in enumerate(zip(*table.values())):
            if all(isinstance(value, str) and value == "" for value in values):
                blank += 1
                continue  # a blank CSV line (JSON nulls are no blank line: they meet the checks)
            row_id = str(table[id_column][index]) if id_column else f"{split}-{index - blank}"
            where = f"{source}, {locate(index)} (id {row_id!r})"
            image = image_of(table[image_column][index] if image_column else None, row_id, where)
            add_row(rows, row_id, table[columns["text"]][index], table[columns["label"]][index], image, where)
        report["blank_rows"][split] = blank
        if blank:
            logger.warning("%s: %d row(s) holding no value left out", source, blank)
        return rows

    return whole_batch(part, rows_of, raw_features(datasets.Image(decode=False) if undecoded else None), f"Reading rows ({split})")


def add_row(rows: dict[str, list], row_id: str, text: Any, label: Any, image: Any, where: str) -> None:
    """One more raw row (see `validation.raw_features`) in the columns `rows`."""
    for name, value in zip(rows, (row_id, as_read(text), as_read(label), image, where)):
        rows[name].append(value)


def table_images(base: Path | None, split: str, report: dict) -> ImageOf:
    """A table's image of a row: an undecoded `Image()` value as it is, else a path resolved against `base` (see
    `image_in_folder`); an empty value means the pair has no image. Without `base` (a dataset from the Hub) the
    path is kept as written."""

    def image_of(value: Any, _, where: str) -> Any:
        if isinstance(value, dict):  # an undecoded `Image()` value
            return value
        if value is None or not str(value).strip():
            return None
        path = Path(str(value).strip())
        return image_in_folder(path, base, split, where, report) if base is not None else str(path)

    return image_of


def image_in_folder(name: str | Path, folder: Path, split: str, where: str, report: dict) -> str:
    """`folder / name`, refused when it leads outside `folder` (`../`, an absolute path elsewhere) unless the
    report allows it (then counted). The path is judged as written, `..` removed lexically: links inside the
    folder may point anywhere, as a data folder of links to a shared image store does."""
    path = folder / name
    if Path(os.path.normpath(path)).is_relative_to(folder):
        return str(path)
    if not report["allow_images_outside_data_dir"]:
        raise ValueError(
            f"{where}: the image path {str(name)!r} leads outside the data folder {folder}; move the image into it, "
            "or pass allow_images_outside_data_dir=True (run_sppscl.py: --allow_images_outside_data_dir) if reading it is intended"
        )
    report["images_outside_data_dir"][split] = report["images_outside_data_dir"].get(split, 0) + 1
    return str(path)


__all__ = [
    "HFM_LABEL_NAMES",
    "MVSA_LABEL_NAMES",
    "LoadedData",
    "ReadOptions",
    "blank_image",
    "load_clmlf_folder",
    "load_csv_or_jsonl",
    "load_datasets_dataset",
    "load_hfm_text_files",
    "load_image",
]
