"""Validation of the rows every reader returns: labels, texts, images, the policies and the report, in one pass.

Every reader gives, per split, a `datasets.Dataset` of raw rows (`raw_features`): `id`, `text` and `label` as read
(kept exactly by `as_read`, judged here), `image` (a path, an undecoded `Image()` value, or `None`) and `where`
(file, line/item/row and id, for messages). `build_loaded_data` matches the labels of every split to one label set
(`labels`), then checks each split in one batched `map` that cleans the texts, maps the labels, checks the images
and leaves out the pairs the policies drop, counting them in the report. Rules:

- Labels follow the one rule of `labels` (one label set; ids only where the set says which id is which); the
  labels matched by case are counted in `case_normalised_labels`.
- Empty texts are refused (`empty_text="error"`) or dropped and counted (`"skip"`, `dropped_texts`).
- Images are checked from their header (`image_size`), or decoded at reduced size (`verify_pixels`, which
  catches truncated files too); a missing or unreadable one raises (`missing_image="error"`), drops the pair
  (`"skip"`) or keeps it with `image=None` (`"blank"`; `blank_image` stands in for it).
- A run that decodes each image once checks headers when reading, and its one decode (the feature extraction's,
  or `apply_pixel_problems`' own pass) meets the same policy afterwards, through `apply_pixel_problems`.
"""

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import datasets
import PIL.Image
from datasets import ClassLabel, DatasetDict, Features, Value
from transformers.utils.logging import tqdm

from ..processing_sppscl import image_size, load_image, text_problems
from .consistency import find_questionable_rows
from .labels import LabelMapper, label_mapper


logger = logging.getLogger(__name__)

MISSING_IMAGE_MODES = ("error", "skip", "blank")
EMPTY_TEXT_MODES = ("error", "skip")
# The splits, in the order every reader gives them (the one list of them).
SPLIT_ORDER = ("train", "validation", "test")
MAX_LISTED_PROBLEMS = 5


@dataclass
class LoadedData:
    """What every reader returns.

    Attributes:
        splits: `train` / `validation` / `test` (those present) with columns id, text, image, label.
        label_names: class names in id order (`label` i is `label_names[i]`).
        report: what the reader did: `source`, `missing_image` (the mode), `text_only`, `rows` (per split, after
            skipping), `skipped` and `blanked` (pairs per split whose image was missing or unreadable),
            `dropped_texts` (pairs dropped for an empty text), `case_normalised_labels` (labels matched to a
            class by case), `classes_without_train_rows`, `undecodable_files` (files read with undecodable
            bytes replaced), `blank_rows` (rows holding no value, left out), `images_outside_data_dir` (images
            read from outside the data folder, when allowed) and the questionable rows (`consistency`).
    """

    splits: DatasetDict
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadOptions:
    """What every reader takes besides its files and columns: `label_names` (see `labels`), the `missing_image` and
    `empty_text` policies, `verify_pixels` (decode each image at reduced size, which catches truncated files,
    rather than read its header) and `allow_images_outside_data_dir` (see `readers.image_in_folder`)."""

    label_names: list[str] | None = None
    missing_image: str = "error"
    verify_pixels: bool = False
    empty_text: str = "error"
    allow_images_outside_data_dir: bool = False

    def __post_init__(self):
        if self.missing_image not in MISSING_IMAGE_MODES:
            raise ValueError(f"missing_image must be one of {MISSING_IMAGE_MODES}, got {self.missing_image!r}")
        if self.empty_text not in EMPTY_TEXT_MODES:
            raise ValueError(f"empty_text must be one of {EMPTY_TEXT_MODES}, got {self.empty_text!r}")

    @classmethod
    def take(cls, keywords: dict[str, Any]) -> "ReadOptions":
        """The options among `keywords`, taken out of it (the rest goes elsewhere: `datasets.load_dataset`)."""
        return cls(**{option.name: keywords.pop(option.name) for option in fields(cls) if option.name in keywords})


def raw_features(image: datasets.Image | None = None) -> Features:
    """The columns of the rows every reader returns: `text` and `label` as read (`as_read`), `image` an undecoded
    `Image()` or a path (`Value`)."""
    return Features({"id": Value("string"), "text": Value("string"), "label": Value("string"), "image": image or Value("string"), "where": Value("string")})


def as_read(value: Any) -> str:
    """A text or label as read (a str, a number, a bool, None, a list; bytes decoded leniently), kept exactly as
    JSON until it is judged (`json.loads`): `Json()` columns would store a str that reads as JSON (`"2"`) as that
    JSON (`2`)."""
    return json.dumps(value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value, default=repr)


def no_rows() -> datasets.Dataset:
    """The rows of a file holding no record."""
    return datasets.Dataset.from_dict({name: [] for name in raw_features()}, features=raw_features())


def whole_batch(dataset: datasets.Dataset, function: Callable[[dict], dict], features: Features, description: str) -> datasets.Dataset:
    """`dataset.map(function)` with the whole dataset as one batch (which may come back shorter), kept in memory
    under a fresh fingerprint: no cache file beside the data, nothing reused, so `function`'s checks and counts run
    every time (and its closure is not hashed). An empty dataset goes through `function` too (`map` would hand it
    back unchanged)."""
    if not len(dataset):
        return datasets.Dataset.from_dict(function(dataset[:]), features=features)
    return dataset.map(function, batched=True, batch_size=None, remove_columns=dataset.column_names, features=features,
                       keep_in_memory=True, new_fingerprint=uuid.uuid4().hex, desc=description)


def blank_image(size: tuple[int, int] = (224, 224)) -> PIL.Image.Image:
    """The black RGB image standing in for a pair whose image is `None` (the one blank image of the project)."""
    return PIL.Image.new("RGB", tuple(size))


def new_report(files: dict[str, Any], options: ReadOptions, text_only: bool, source: str | None = None) -> dict[str, Any]:
    """A new report of data read from `files` (split -> file), whose `source` is by default the files."""
    return {
        "source": source or ", ".join(str(path) for path in files.values()), "text_only": text_only,
        "missing_image": options.missing_image, "empty_text": options.empty_text,
        "rows": {}, "skipped": {}, "blanked": {}, "dropped_texts": {}, "case_normalised_labels": {},
        "classes_without_train_rows": [], "undecodable_files": [], "blank_rows": {},
        "allow_images_outside_data_dir": options.allow_images_outside_data_dir, "images_outside_data_dir": {},
        "files": {split: str(path) for split, path in files.items()},
    }


# ---------------------------------------------------------------- texts and images


def clean_text(text: Any, where: str) -> str | None:
    """The text as a str; None when it is empty: blank or only invisible characters, by `text_problems`, the rule
    of serving too (the tokenizer's part of it comes in `preflight`). A number, a bool or a list is refused:
    written as a string it would be a text nobody wrote."""
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: the text is a {type(text).__name__} ({str(text)[:100]}), not a string; write it as a string (in quotes)")
    return None if text is None or text_problems([text]) else text


def image_problem(image: Any, name: str, verify_pixels: bool) -> str | None:
    """Why the image cannot be used, or None when it can: the header is read (limits included) and, with
    `verify_pixels`, the image is decoded at reduced size, which catches truncated files too."""
    if isinstance(image, dict):  # an undecoded `Image()` value
        image = image.get("bytes") or image.get("path")
    if image is None:
        return "no image given"
    try:
        if verify_pixels:
            load_image(image, name=name, reduced_size=1)
        else:
            image_size(image, name=name)
    except ValueError as error:
        return str(error)
    return None


def raise_image_problems(split: str, wheres: list[str], problems: dict[int, str]) -> None:
    listed = "; ".join(f"{wheres[index]}: {problem}" for index, problem in list(problems.items())[:MAX_LISTED_PROBLEMS])
    raise ValueError(
        f"{len(problems)} image(s) of split {split!r} missing or unreadable, e.g. {listed}. "
        "Pass missing_image='skip' to drop these pairs or missing_image='blank' to keep them with a blank image "
        "(run_sppscl.py: --missing_image skip|blank)."
    )


def meet_missing_image(split: str, problems: dict[int, str], wheres: list[str], missing_image: str, report: dict[str, Any], what: str) -> set[int]:
    """The `missing_image` policy for a split's image `problems` (row index -> problem; `wheres` locates each
    row): raise, or warn and add them to the report's `skipped` or `blanked`; the rows to drop."""
    if problems and missing_image == "error":
        raise_image_problems(split, wheres, problems)
    for count, mode in (("skipped", "skip"), ("blanked", "blank")):
        report[count][split] = report[count].get(split, 0) + (len(problems) if missing_image == mode else 0)
    if problems:
        action = "dropped" if missing_image == "skip" else "kept with a blank image"
        logger.warning("%s, split %s: %d of %d %s; %s", report["source"], split, len(problems), len(wheres), what, action)
    return set(problems) if missing_image == "skip" else set()


def raise_empty_texts(split: str, wheres: list[str], empty: list[int]) -> None:
    listed = "; ".join(f"{wheres[index]}: the text is empty or has only invisible characters" for index in empty[:MAX_LISTED_PROBLEMS])
    raise ValueError(
        f"{len(empty)} empty text(s) in split {split!r}: {listed}. "
        "Fix or remove these rows, or pass empty_text='skip' (run_sppscl.py: --empty_text skip) to drop them."
    )


# ---------------------------------------------------------------- assembling


def build_loaded_data(raw: dict[str, datasets.Dataset], options: ReadOptions, report: dict[str, Any], label_names: list[str] | None = None) -> LoadedData:
    """Validate texts, labels and images of every split against one label set (`label_names`, else the options')
    and assemble the `DatasetDict`."""
    mapper = label_mapper(raw, label_names or options.label_names)
    names = mapper.names
    image_feature = next(iter(raw.values())).features["image"]
    features = Features({"id": Value("string"), "text": Value("string"), "image": image_feature, "label": ClassLabel(names=names)})
    checked = {split: check_split(split, raw[split], mapper, options, report, features) for split in SPLIT_ORDER if split in raw}
    find_questionable_rows({split: part.to_dict() for split, part in checked.items()}, names, report)
    if isinstance(image_feature, datasets.Image):  # undecoded while checked; consumers get PIL images
        checked = {split: part.cast_column("image", datasets.Image()) for split, part in checked.items()}
    if "train" in checked:
        counts = Counter(checked["train"]["label"])
        report["classes_without_train_rows"] = [name for index, name in enumerate(names) if counts[index] == 0]
        if report["classes_without_train_rows"]:
            logger.warning("%s: no training pair has class(es) %s; the model cannot learn them", report["source"], report["classes_without_train_rows"])
    return LoadedData(DatasetDict(checked), names, report)


def check_split(split: str, rows: datasets.Dataset, mapper: LabelMapper, options: ReadOptions, report: dict[str, Any], features: Features) -> datasets.Dataset:
    """One split's rows after validation, the `empty_text` and the `missing_image` policies: one pass over the
    split, which counts what it drops or blanks in `report`."""

    def check(batch: dict[str, list]) -> dict[str, list]:
        wheres = batch["where"]
        texts = [clean_text(json.loads(text), where) for text, where in zip(batch["text"], wheres)]
        empty = [index for index, text in enumerate(texts) if text is None]
        if empty and options.empty_text == "error":
            raise_empty_texts(split, wheres, empty)
        before = mapper.case_matched
        labels = [mapper(json.loads(label), where) for label, where in zip(batch["label"], wheres)]
        report["case_normalised_labels"][split] = mapper.case_matched - before
        if report["case_normalised_labels"][split]:
            logger.warning("%s, split %s: %d label(s) matched to a class by case only", report["source"], split, report["case_normalised_labels"][split])
        problems = {} if report["text_only"] else image_problems(batch["image"], options.verify_pixels, split)
        dropped = meet_missing_image(split, problems, wheres, options.missing_image, report, "pairs have a missing or unreadable image")
        report["dropped_texts"][split] = len(empty)
        if empty:
            logger.warning("%s, split %s: %d pair(s) with an empty text dropped, e.g. %s", report["source"], split, len(empty), wheres[empty[0]])
        dropped |= set(empty)
        keep = [index for index in range(len(wheres)) if index not in dropped]
        report["rows"][split] = len(keep)
        images = [None if index in problems else image for index, image in enumerate(batch["image"])]
        return {"id": [batch["id"][index] for index in keep], "text": [texts[index] for index in keep],
                "image": [images[index] for index in keep], "label": [labels[index] for index in keep]}

    return whole_batch(rows, check, features, f"Checking rows ({split})")


def image_problems(images: list[Any], verify_pixels: bool, split: str) -> dict[int, str]:
    """Row index -> problem, for the rows whose image is missing or unreadable. Takes minutes on a large split, so
    it is announced and shows a progress bar (transformers' tqdm, which `--disable_tqdm` turns off)."""
    description = f"Checking images ({split})"
    how = "decoding each at reduced size" if verify_pixels else "reading each header"
    logger.info("%s: %d images, %s", description, len(images), how)
    problems = {}
    for index, image in enumerate(tqdm(images, desc=description, unit="image")):
        problem = image_problem(image, describe_image(image), verify_pixels)
        if problem is not None:
            problems[index] = problem
    return problems


def apply_pixel_problems(splits: dict[str, datasets.Dataset], missing_image: str, report: dict[str, Any],
                         problems: dict[str, dict[int, str]] | None = None) -> dict[str, datasets.Dataset]:
    """The `missing_image` policy for the images whose pixels do not decode (truncated files), after reading
    checked only their headers: `problems` (split -> row index -> problem) as found by a pass that decoded them
    already (the feature extraction, whose features of such a row are the blank image's), else each split's images
    are decoded here at reduced size. Counts go to `report` (`skipped`, `blanked`, `rows`)."""
    checked = {}
    for split, dataset in splits.items():
        feature = dataset.features.get("image")
        if isinstance(feature, datasets.Image):  # read as stored: the check below is the one decode
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        found = (problems or {}).get(split)
        if found is None:  # None stands for an image already missing (blanked when read, or no image column)
            images = list(dataset["image"]) if "image" in dataset.column_names else []
            present = [index for index, image in enumerate(images) if image is not None]
            found = {present[index]: problem for index, problem in image_problems([images[i] for i in present], True, split).items()}
        wheres = [f"id {str(row_id)!r}" for row_id in dataset["id"]]
        if meet_missing_image(split, found, wheres, missing_image, report, "images do not decode"):
            dataset = dataset.select([index for index in range(len(dataset)) if index not in found])
            report["rows"][split] = len(dataset)
        elif found and "image" in dataset.column_names:
            dataset = dataset.map(lambda row, index: {"image": None} if index in found else {}, with_indices=True)
        checked[split] = dataset.cast_column("image", feature) if isinstance(feature, datasets.Image) else dataset
    return checked


def describe_image(image: Any) -> str:
    if isinstance(image, dict):
        return image.get("path") or "<embedded image bytes>"
    return str(image)


__all__ = ["LoadedData", "ReadOptions", "apply_pixel_problems", "as_read", "blank_image", "build_loaded_data", "new_report", "no_rows", "raw_features", "whole_batch"]
