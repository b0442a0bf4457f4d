"""Readers of image-text classification data, each returning the same `LoadedData`.

Every reader gives a `datasets.DatasetDict` whose splits are `train`, `validation` and `test` (only those the
source has), with the columns

- `id` (str),
- `text` (str, never empty),
- `image`: the resolved path of the image file (str), or `None` where the pair has no usable image (text-only
  data, or `missing_image="blank"`); `load_datasets_dataset` keeps an `Image()` column as it is, so there the
  column holds PIL images (or `None`). Consumers must therefore accept a path, a PIL image or `None`:
  `load_image` reads the first two, `blank_image` stands in for the third.
- `label` (int, a `ClassLabel` feature carrying the label names).

Rules shared by all readers:

- a file that is not valid UTF-8 is still read: undecodable bytes become U+FFFD (the valid parts, emoji
  included, stay intact) and the file is named in a warning and in the report;
- an empty text, a label outside the label set and a missing file raise errors that name the file, the row
  (and id) and, for labels, the allowed ones;
- images are checked cheaply (PIL reads the header and `verify()`s it, without decoding pixels; about half a
  second for the 4061 images of MVSA-Single). A missing or unreadable image raises (`missing_image="error"`),
  drops the pair (`"skip"`) or keeps it with `image=None` (`"blank"`); skipped and blanked counts per split
  are logged and reported. `verify_pixels=True` also decodes each image at reduced size (JPEG draft mode), which
  catches truncated files as well (about 1.5 s for MVSA-Single).
"""

import ast
import csv
import io
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import PIL.Image
from datasets import ClassLabel, DatasetDict, Features, Value

# Re-exported: the one image loader of the project, for consumers of the image column.
from ..processing_sppscl import load_image


logger = logging.getLogger(__name__)

MVSA_LABEL_NAMES = ["positive", "neutral", "negative"]
HFM_LABEL_NAMES = ["not_sarcastic", "sarcastic"]
MISSING_IMAGE_MODES = ("error", "skip", "blank")
SPLIT_ORDER = ("train", "validation", "test")
# Names under which data sets ship their splits, mapped to ours.
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "val": "validation", "test": "test"}
CLMLF_IMAGE_FOLDERS = ("images", "dataset_image")
MAX_LISTED_PROBLEMS = 5

PathLike = str | os.PathLike


@dataclass
class LoadedData:
    """What every reader returns.

    Attributes:
        splits: `train` / `validation` / `test` (those present) with columns id, text, image, label.
        label_names: class names in id order (`label` i is `label_names[i]`).
        report: what the reader did: `source`, `missing_image` (the mode), `text_only`, `rows` (per split, after
            skipping), `skipped` and `blanked` (pairs per split whose image was missing or unreadable) and
            `undecodable_files` (files read with undecodable bytes replaced).
    """

    splits: DatasetDict
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawRow:
    """One pair as read, before validation; `where` locates it in error messages."""

    id: str
    text: Any
    label: Any
    image: Any
    where: str


def blank_image(size: tuple[int, int] = (224, 224)) -> PIL.Image.Image:
    """A black RGB image, the stand-in for a pair whose image is `None`."""
    return PIL.Image.new("RGB", size)


# ---------------------------------------------------------------- public readers


def load_clmlf_folder(
    data_dir: PathLike,
    label_names: list[str] | None = None,
    missing_image: str = "error",
    require_images: bool = True,
    image_dir: PathLike | None = None,
    verify_pixels: bool = False,
) -> LoadedData:
    """A folder in CLMLF's layout: `train.json`, `dev.json` or `valid.json` (the validation split), `test.json`,
    each a JSON list of `{"id", "text", "emotion_label"}`, and the images as `images/{id}.jpg` or
    `dataset_image/{id}.jpg` (or in `image_dir`).

    Without `label_names`, the labels decide: ids up to 2 are MVSA's (positive, neutral, negative), ids up to 1
    HFM's (not_sarcastic, sarcastic). Without an image folder, `require_images=False` loads the texts alone
    (every image `None`); by default that is an error.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLMLF data folder not found: {folder}")
    files = clmlf_split_files(folder)
    images = clmlf_image_folder(folder, image_dir, require_images)
    report = new_report(str(folder), missing_image, text_only=images is None)
    raw = {split: read_clmlf_json(path, images, report) for split, path in files.items()}
    names = label_names or infer_clmlf_label_names(raw)
    return build_loaded_data(raw, names, missing_image, report, verify_pixels)


def load_hfm_text_files(
    train_file: PathLike | None,
    validation_file: PathLike | None = None,
    test_file: PathLike | None = None,
    image_dir: PathLike | None = None,
    label_names: list[str] | None = None,
    missing_image: str = "error",
    verify_pixels: bool = False,
) -> LoadedData:
    """HFM's original text files: one Python-literal list per line, `[id, text, label]` in the training file and
    `[id, text, hashtag_label, human_label]` in the validation and test files, where the last (human) label
    counts. Images are `image_dir/{id}.jpg`; without `image_dir` the data is text-only (every image `None`)."""
    images = Path(image_dir).resolve() if image_dir is not None else None
    if images is not None and not images.is_dir():
        raise FileNotFoundError(f"HFM image folder not found: {images}")
    files = given_split_files(train_file, validation_file, test_file)
    report = new_report(", ".join(str(path) for path in files.values()), missing_image, text_only=images is None)
    raw = {split: read_hfm_lines(path, images, report) for split, path in files.items()}
    return build_loaded_data(raw, label_names or HFM_LABEL_NAMES, missing_image, report, verify_pixels)


def load_csv_or_jsonl(
    train_file: PathLike | None = None,
    validation_file: PathLike | None = None,
    test_file: PathLike | None = None,
    image_column: str | None = "image",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    label_names: list[str] | None = None,
    missing_image: str = "error",
    verify_pixels: bool = False,
) -> LoadedData:
    """CSV (`.csv`, `.tsv`) or JSON (`.jsonl`, or `.json` holding JSON lines or one list) files, one per split.

    Image paths are resolved against the folder of their file; an empty one counts as a missing image;
    `image_column=None` reads text-only data. Ids come from `id_column`, else from an `id` column if there is one,
    else they are `<split>-<row>`. Labels may be ids or names: with `label_names`, a label is one of the names or
    an id; without, integer labels are ids named "0", "1", ... and other labels are names, sorted over all splits.
    """
    files = given_split_files(train_file, validation_file, test_file)
    report = new_report(", ".join(str(path) for path in files.values()), missing_image, text_only=image_column is None)
    columns = {"image": image_column, "text": text_column, "label": label_column, "id": id_column}
    raw = {split: read_table_file(path, split, columns, report) for split, path in files.items()}
    names = label_names or infer_label_names(raw)
    return build_loaded_data(raw, names, missing_image, report, verify_pixels)


def load_datasets_dataset(
    name_or_path: str,
    image_column: str | None = "image",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    label_names: list[str] | None = None,
    missing_image: str = "error",
    verify_pixels: bool = False,
    **load_kwargs: Any,
) -> LoadedData:
    """A `datasets` dataset: a folder written by `save_to_disk`, or anything `datasets.load_dataset` takes (a Hub
    id or a local loading script; `load_kwargs` go to it). Splits named train / validation, valid, dev, val /
    test are kept.

    An `Image()` image column stays an `Image()` column (PIL images for consumers); a string column holds paths,
    resolved against a local dataset's folder. A `ClassLabel` label column gives the label names. Ids and labels
    otherwise follow `load_csv_or_jsonl`. The result is rebuilt in memory (images as their encoded bytes).
    """
    dataset = open_datasets_dataset(name_or_path, **load_kwargs)
    base = Path(name_or_path).resolve() if Path(name_or_path).exists() else None
    report = new_report(name_or_path, missing_image, text_only=image_column is None)
    columns = {"image": image_column, "text": text_column, "label": label_column, "id": id_column}
    raw = {split: read_datasets_split(part, f"{name_or_path}, split {split}", split, columns, base) for split, part in dataset.items()}
    names = class_label_names(dataset, label_column, label_names) or infer_label_names(raw)
    image_feature = image_feature_of(dataset, image_column)
    return build_loaded_data(raw, names, missing_image, report, verify_pixels, image_feature)


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
    """The folder holding `{id}.jpg`; `None` for text-only data (allowed only when images are not required)."""
    if image_dir is not None:
        if not Path(image_dir).is_dir():
            raise FileNotFoundError(f"image folder not found: {image_dir}")
        return Path(image_dir).resolve()
    for name in CLMLF_IMAGE_FOLDERS:
        if (folder / name).is_dir():
            return (folder / name).resolve()
    if require_images:
        raise FileNotFoundError(
            f"{folder} has no image folder (looked for {' and '.join(name + '/' for name in CLMLF_IMAGE_FOLDERS)}); "
            "pass require_images=False to load the texts alone (every image is then None)"
        )
    logger.info("%s has no image folder; loading the texts alone (every image is None)", folder)
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


# ---------------------------------------------------------------- reading rows


def read_text_lenient(path: Path, report: dict) -> str:
    """A file's text as UTF-8; bytes that are not UTF-8 become U+FFFD so that no row is lost to a bad byte."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        logger.warning("%s is not valid UTF-8 (first bad byte at offset %d); undecodable bytes replaced by U+FFFD", path, error.start)
        report["undecodable_files"].append(str(path))
        return data.decode("utf-8-sig", errors="replace")


def read_clmlf_json(path: Path, images: Path | None, report: dict) -> list[RawRow]:
    """The rows of one CLMLF split file (a JSON list of `{"id", "text", "emotion_label"}`)."""
    items = parse_json(read_text_lenient(path, report), path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of {{id, text, emotion_label}} objects, got {type(items).__name__}")
    rows = []
    for index, item in enumerate(items):
        where = f"{path}, item {index}"
        if not isinstance(item, dict) or not {"id", "text", "emotion_label"} <= item.keys():
            raise ValueError(f"{where}: expected an object with id, text and emotion_label, got {str(item)[:200]}")
        row_id = str(item["id"])
        image = str(images / f"{row_id}.jpg") if images is not None else None
        rows.append(RawRow(row_id, item["text"], item["emotion_label"], image, f"{where} (id {row_id!r})"))
    return rows


def read_hfm_lines(path: Path, images: Path | None, report: dict) -> list[RawRow]:
    """The rows of one HFM text file: a Python list per line whose last element is the label that counts."""
    rows = []
    for number, line in enumerate(read_text_lenient(path, report).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"{path}, line {number}: not a Python list literal ({error})") from error
        if not isinstance(item, (list, tuple)) or len(item) < 3:
            raise ValueError(f"{path}, line {number}: expected [id, text, label] or [id, text, hashtag_label, label], got {line[:200]}")
        row_id = str(item[0])
        image = str(images / f"{row_id}.jpg") if images is not None else None
        rows.append(RawRow(row_id, item[1], item[-1], image, f"{path}, line {number} (id {row_id!r})"))
    return rows


def read_table_file(path: Path, split: str, columns: dict[str, str | None], report: dict) -> list[RawRow]:
    """The rows of one CSV / TSV / JSON (lines or list) file, with image paths resolved against its folder."""
    records = list(table_records(path, read_text_lenient(path, report)))
    rows = []
    for where, record in records:
        require_columns(record, columns, f"{path}, {where}")
        row_id = record_id(record, columns["id"], split, len(rows))
        image = resolve_image_path(record.get(columns["image"]), path.parent.resolve()) if columns["image"] else None
        rows.append(RawRow(row_id, record[columns["text"]], record[columns["label"]], image, f"{path}, {where} (id {row_id!r})"))
    return rows


def table_records(path: Path, text: str) -> Iterable[tuple[str, dict]]:
    """(location, record) pairs of a table file, by its extension."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        for record in reader:
            yield f"line {reader.line_num}", record
    elif suffix == ".json" and text.lstrip().startswith("["):
        for index, record in enumerate(parse_json(text, path)):
            yield f"item {index}", as_record(record, f"{path}, item {index}")
    elif suffix in (".json", ".jsonl"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield f"line {number}", as_record(parse_json(line, f"{path}, line {number}"), f"{path}, line {number}")
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def read_datasets_split(part: datasets.Dataset, source: str, split: str, columns: dict[str, str | None], base: Path | None) -> list[RawRow]:
    """The rows of one split of a `datasets` dataset; an `Image()` column is read undecoded ({bytes, path})."""
    missing = [name for name in (columns["text"], columns["label"], columns["image"], columns["id"]) if name and name not in part.column_names]
    if missing:
        raise ValueError(f"{source}: no column {missing[0]!r} (columns: {part.column_names})")
    image_column = columns["image"]
    if image_column and isinstance(part.features[image_column], datasets.Image):
        part = part.cast_column(image_column, datasets.Image(decode=False))
    id_column = columns["id"] or ("id" if "id" in part.column_names else None)
    # One to_dict beats row-by-row column access by far on tens of thousands of rows.
    table = part.select_columns(list(dict.fromkeys(filter(None, (id_column, columns["text"], columns["label"], image_column))))).to_dict()
    ids = [str(value) for value in table[id_column]] if id_column else [f"{split}-{index}" for index in range(len(part))]
    texts, labels = table[columns["text"]], table[columns["label"]]
    images = table[image_column] if image_column else [None] * len(part)
    if image_column and not isinstance(part.features[image_column], datasets.Image):
        images = [resolve_image_path(image, base) for image in images]
    return [RawRow(ids[index], texts[index], labels[index], images[index], f"{source}, row {index} (id {ids[index]!r})") for index in range(len(part))]


def parse_json(text: str, where: PathLike) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: invalid JSON ({error})") from error


def as_record(record: Any, where: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {str(record)[:200]}")
    return record


def require_columns(record: dict, columns: dict[str, str | None], where: str) -> None:
    """Fail on the first row that lacks a needed column, naming the columns it has."""
    for role, name in columns.items():
        if name is not None and name not in record:
            hint = "; pass image_column=None for text-only data" if role == "image" else ""
            raise ValueError(f"{where}: no {role} column {name!r} (columns: {list(record)}){hint}")


def record_id(record: dict, id_column: str | None, split: str, index: int) -> str:
    """The row's id from `id_column`, else from an `id` column, else generated from split and position."""
    if id_column is not None:
        return str(record[id_column])
    return str(record["id"]) if "id" in record else f"{split}-{index}"


def resolve_image_path(value: Any, base: Path | None) -> str | None:
    """An image path made absolute against `base`; an empty value means the pair has no image."""
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip())
    return str(base / path if base is not None and not path.is_absolute() else path)


# ---------------------------------------------------------------- datasets datasets


def open_datasets_dataset(name_or_path: str, **load_kwargs: Any) -> DatasetDict:
    """The dataset's splits under our names: a `save_to_disk` folder, else `datasets.load_dataset`."""
    if Path(name_or_path).is_dir() and any((Path(name_or_path) / name).is_file() for name in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(name_or_path)
    else:
        loaded = datasets.load_dataset(name_or_path, **load_kwargs)
    if isinstance(loaded, datasets.Dataset):
        return DatasetDict({"train": loaded})
    renamed = {}
    for name, part in loaded.items():
        ours = SPLIT_ALIASES.get(name.lower())
        if ours is None:
            logger.warning("%s: split %r ignored (kept: train, validation/valid/dev/val, test)", name_or_path, name)
        elif ours in renamed:
            raise ValueError(f"{name_or_path}: two splits map to {ours!r}; keep one of them")
        else:
            renamed[ours] = part
    if not renamed:
        raise ValueError(f"{name_or_path}: no train, validation or test split among {list(loaded)}")
    return DatasetDict(renamed)


def class_label_names(dataset: DatasetDict, label_column: str, label_names: list[str] | None) -> list[str] | None:
    """The names of a `ClassLabel` label column (which must agree with `label_names` if given), else `label_names`."""
    feature = next(iter(dataset.values())).features.get(label_column)
    if not isinstance(feature, ClassLabel):
        return label_names
    if label_names is not None and list(label_names) != list(feature.names):
        raise ValueError(f"label_names {list(label_names)} differ from the dataset's ClassLabel names {feature.names}")
    return list(feature.names)


def image_feature_of(dataset: DatasetDict, image_column: str | None) -> datasets.Image | None:
    """An `Image()` feature when the dataset's image column is one (the output keeps it), else None."""
    if image_column is None:
        return None
    feature = next(iter(dataset.values())).features.get(image_column)
    return datasets.Image() if isinstance(feature, datasets.Image) else None


# ---------------------------------------------------------------- labels


def integer_label(value: Any) -> int | None:
    """The value as an int when it is one (an int, an integral float or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def allowed_labels(label_names: list[str]) -> str:
    return f"ids 0..{len(label_names) - 1} or names {label_names}"


def label_id(value: Any, label_names: list[str], where: str) -> int:
    """The id of a raw label given as a label name or as an id of the label set."""
    if isinstance(value, str) and value.strip() in label_names:
        return label_names.index(value.strip())
    as_int = integer_label(value)
    if as_int is not None and 0 <= as_int < len(label_names):
        return as_int
    raise ValueError(f"{where}: unknown label {value!r}; allowed labels: {allowed_labels(label_names)}")


def infer_clmlf_label_names(raw: dict[str, list[RawRow]]) -> list[str]:
    """MVSA's names when a label 2 occurs, HFM's when the labels are 0 and 1; anything else needs `label_names`."""
    largest = 0
    for row in (row for rows in raw.values() for row in rows):
        as_int = integer_label(row.label)
        if as_int is None or not 0 <= as_int <= 2:
            raise ValueError(
                f"{row.where}: unknown label {row.label!r}; CLMLF labels are ids 0..2 (MVSA: {MVSA_LABEL_NAMES}) "
                f"or 0..1 (HFM: {HFM_LABEL_NAMES}); pass label_names for another label set"
            )
        largest = max(largest, as_int)
    return MVSA_LABEL_NAMES if largest == 2 else HFM_LABEL_NAMES


def infer_label_names(raw: dict[str, list[RawRow]]) -> list[str]:
    """Names for labels read without `label_names`: integer ids named "0".."n-1", or the sorted distinct names."""
    rows = [row for split_rows in raw.values() for row in split_rows]
    for row in rows:
        if row.label is None or not str(row.label).strip():
            raise ValueError(f"{row.where}: the label is missing")
    ids = [integer_label(row.label) for row in rows]
    if all(value is not None for value in ids):
        negative = next((row for row, value in zip(rows, ids) if value < 0), None)
        if negative is not None:
            raise ValueError(f"{negative.where}: unknown label {negative.label!r}; label ids must be 0 or more")
        return [str(index) for index in range(max(ids, default=-1) + 1)]
    return sorted({str(row.label).strip() for row in rows})


# ---------------------------------------------------------------- texts and images


def clean_text(row: RawRow) -> str:
    """The row's text as a non-empty str (bytes decoded leniently)."""
    text = row.text.decode("utf-8", errors="replace") if isinstance(row.text, bytes) else row.text
    if text is None or not str(text).strip():
        raise ValueError(f"{row.where}: the text is empty")
    return str(text)


def open_image_source(image: Any) -> Any:
    """What `PIL.Image.open` takes for an image value: a path, or a byte stream for an undecoded `Image()` value."""
    if isinstance(image, dict):
        return io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
    return image


def describe_image(image: Any) -> str:
    if isinstance(image, dict):
        return image.get("path") or "<embedded image bytes>"
    return str(image)


def image_problem(image: Any, verify_pixels: bool) -> str | None:
    """Why the image cannot be used, or None when it can. Reads only the header unless `verify_pixels`."""
    source = open_image_source(image)
    if source is None:
        return "no image given"
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        return f"image file not found: {source}"
    try:
        with PIL.Image.open(source) as opened:
            if verify_pixels:
                # Draft mode lets JPEG decode at 1/8 scale: cheap, yet it still reads the whole file.
                opened.draft("RGB", (1, 1))
                opened.load()
            else:
                opened.verify()
    except Exception as error:  # PIL signals broken files with many exception types
        return f"unreadable image {describe_image(image)}: {type(error).__name__}: {error}"
    return None


def image_problems(rows: list[RawRow], verify_pixels: bool) -> dict[int, str]:
    """Row index -> problem, for the rows whose image is missing or unreadable."""
    problems = {}
    for index, row in enumerate(rows):
        problem = image_problem(row.image, verify_pixels)
        if problem is not None:
            problems[index] = problem
    return problems


def raise_image_problems(split: str, rows: list[RawRow], problems: dict[int, str]) -> None:
    listed = "; ".join(f"{rows[index].where}: {problem}" for index, problem in list(problems.items())[:MAX_LISTED_PROBLEMS])
    raise ValueError(
        f"{len(problems)} image(s) of split {split!r} missing or unreadable, e.g. {listed}. "
        "Pass missing_image='skip' to drop these pairs or missing_image='blank' to keep them with a blank image."
    )


# ---------------------------------------------------------------- assembling


def new_report(source: str, missing_image: str, text_only: bool) -> dict[str, Any]:
    if missing_image not in MISSING_IMAGE_MODES:
        raise ValueError(f"missing_image must be one of {MISSING_IMAGE_MODES}, got {missing_image!r}")
    return {"source": source, "missing_image": missing_image, "text_only": text_only, "rows": {}, "skipped": {}, "blanked": {}, "undecodable_files": []}


def build_loaded_data(
    raw: dict[str, list[RawRow]],
    label_names: list[str],
    missing_image: str,
    report: dict[str, Any],
    verify_pixels: bool,
    image_feature: datasets.Image | None = None,
) -> LoadedData:
    """Validate texts, labels and images of every split and assemble the `DatasetDict`."""
    label_names = [str(name) for name in label_names]
    features = Features(
        {"id": Value("string"), "text": Value("string"), "image": image_feature or Value("string"), "label": ClassLabel(names=label_names)}
    )
    splits = {}
    for split in (name for name in SPLIT_ORDER if name in raw):
        columns = split_columns(split, raw[split], label_names, missing_image, report, verify_pixels)
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return LoadedData(DatasetDict(splits), label_names, report)


def split_columns(
    split: str, rows: list[RawRow], label_names: list[str], missing_image: str, report: dict[str, Any], verify_pixels: bool
) -> dict[str, list]:
    """The four columns of one split, after validation and the `missing_image` policy."""
    texts = [clean_text(row) for row in rows]
    labels = [label_id(row.label, label_names, row.where) for row in rows]
    problems = {} if report["text_only"] else image_problems(rows, verify_pixels)
    if problems and missing_image == "error":
        raise_image_problems(split, rows, problems)
    report["skipped"][split] = len(problems) if missing_image == "skip" else 0
    report["blanked"][split] = len(problems) if missing_image == "blank" else 0
    if problems:
        action = "dropped" if missing_image == "skip" else "kept with a blank image"
        logger.warning("%s, split %s: %d of %d pairs have a missing or unreadable image; %s", report["source"], split, len(problems), len(rows), action)
    keep = [index for index in range(len(rows)) if not (missing_image == "skip" and index in problems)]
    report["rows"][split] = len(keep)
    return {
        "id": [rows[index].id for index in keep],
        "text": [texts[index] for index in keep],
        "image": [None if index in problems else rows[index].image for index in keep],
        "label": [labels[index] for index in keep],
    }


__all__ = [
    "HFM_LABEL_NAMES",
    "MVSA_LABEL_NAMES",
    "LoadedData",
    "blank_image",
    "load_clmlf_folder",
    "load_csv_or_jsonl",
    "load_datasets_dataset",
    "load_hfm_text_files",
    "load_image",
]
