"""Validation of the rows every reader returns: labels, texts, images, the missing-image policy and the report.

The readers turn each format into `RawRow`s; `build_loaded_data` checks them and assembles the `DatasetDict`.
Rules:

- One label set: `label_names` when given, else the training split's labels (the first split's when there is
  no training split). A label of another split outside that set is refused, naming file, row and id: a class
  the training split lacks cannot be learnt and would score 0 silently. Labels are matched exactly, else by
  case when exactly one class matches (`Positive` -> `positive`, counted in `case_normalised_labels`); a set
  holding two spellings of one name (`Positive` and `positive`) is refused, since the fix (one spelling, or
  `--class_names`) is the user's to choose.
- Empty texts are refused (`empty_text="error"`) or dropped and counted (`"skip"`, `dropped_texts`).
- Images are checked from their header (`image_size`), or decoded at reduced size (`verify_pixels`, which
  catches truncated files too); a missing or unreadable one raises (`missing_image="error"`), drops the pair
  (`"skip"`) or keeps it with `image=None` (`"blank"`; `blank_image` stands in for it).
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import datasets
import PIL.Image
from datasets import ClassLabel, DatasetDict, Features, Value

from ..processing_sppscl import image_size, load_image, text_problems


logger = logging.getLogger(__name__)

MISSING_IMAGE_MODES = ("error", "skip", "blank")
EMPTY_TEXT_MODES = ("error", "skip")
SPLIT_ORDER = ("train", "validation", "test")
MAX_LISTED_PROBLEMS = 5
CLASS_NAMES_HINT = "pass label_names=[...] (run_sppscl.py: --class_names a,b,c) in label-id order"


@dataclass
class LoadedData:
    """What every reader returns.

    Attributes:
        splits: `train` / `validation` / `test` (those present) with columns id, text, image, label.
        label_names: class names in id order (`label` i is `label_names[i]`).
        report: what the reader did: `source`, `missing_image` (the mode), `text_only`, `rows` (per split, after
            skipping), `skipped` and `blanked` (pairs per split whose image was missing or unreadable),
            `dropped_texts` (pairs dropped for an empty text), `case_normalised_labels` (labels matched to a
            class by case), `classes_without_train_rows` and `undecodable_files` (files read with undecodable
            bytes replaced).
    """

    splits: DatasetDict
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawRow:
    """One pair as read, before validation; `where` locates it in error messages (file, line/item/row, id)."""

    id: str
    text: Any
    label: Any
    image: Any
    where: str


def blank_image(size: tuple[int, int] = (224, 224)) -> PIL.Image.Image:
    """The black RGB image standing in for a pair whose image is `None` (the one blank image of the project)."""
    return PIL.Image.new("RGB", tuple(size))


def new_report(source: str, missing_image: str, text_only: bool, empty_text: str = "error") -> dict[str, Any]:
    if missing_image not in MISSING_IMAGE_MODES:
        raise ValueError(f"missing_image must be one of {MISSING_IMAGE_MODES}, got {missing_image!r}")
    if empty_text not in EMPTY_TEXT_MODES:
        raise ValueError(f"empty_text must be one of {EMPTY_TEXT_MODES}, got {empty_text!r}")
    return {
        "source": source, "missing_image": missing_image, "empty_text": empty_text, "text_only": text_only,
        "rows": {}, "skipped": {}, "blanked": {}, "dropped_texts": {}, "case_normalised_labels": {},
        "classes_without_train_rows": [], "undecodable_files": [],
    }


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


def refuse_case_twins(names: list[str], where: dict[str, str], source: str) -> None:
    """Refuse a label set holding two names that differ only in case: they would become two classes."""
    seen: dict[str, str] = {}
    for name in names:
        twin = seen.setdefault(name.casefold(), name)
        if twin != name:
            located = f" ({where[twin]}; {where[name]})" if twin in where and name in where else ""
            raise ValueError(
                f"{source}: labels {twin!r} and {name!r} differ only in case and would become two classes{located}; "
                f"write one spelling, or {CLASS_NAMES_HINT} (labels that differ from a class only in case then map to it)"
            )


def infer_label_names(raw: dict[str, list[RawRow]]) -> list[str]:
    """The label set of the training split (the first split without one): integer ids named "0".."n-1", or
    the sorted distinct names."""
    reference = "train" if "train" in raw else next(iter(raw))
    rows = raw[reference]
    for row in (row for split_rows in raw.values() for row in split_rows):
        if row.label is None or not str(row.label).strip():
            raise ValueError(f"{row.where}: the label is missing; give every row a label")
    ids = [integer_label(row.label) for row in rows]
    if all(value is not None for value in ids):
        negative = next((row for row, value in zip(rows, ids) if value < 0), None)
        if negative is not None:
            raise ValueError(f"{negative.where}: unknown label {negative.label!r}; label ids must be 0 or more")
        return [str(index) for index in range(max(ids, default=-1) + 1)]
    first_seen = {}
    for row in rows:
        first_seen.setdefault(str(row.label).strip(), row.where)
    names = sorted(first_seen)
    refuse_case_twins(names, first_seen, f"split {reference!r}")
    return names


class LabelMapper:
    """Raw labels (names or ids) to ids of one label set, counting the labels matched by case only."""

    def __init__(self, label_names: list[str], from_train: bool):
        refuse_case_twins(label_names, {}, "label_names")
        self.names = label_names
        self.by_case = {name.casefold(): index for index, name in enumerate(label_names)}
        self.from_train = from_train
        self.case_matched = 0

    def __call__(self, value: Any, where: str) -> int:
        text = value.strip() if isinstance(value, str) else None
        if text in self.names:
            return self.names.index(text)
        as_int = integer_label(value)
        if as_int is not None and 0 <= as_int < len(self.names):
            return as_int
        if text is not None and text.casefold() in self.by_case:
            self.case_matched += 1
            return self.by_case[text.casefold()]
        origin = (
            "the label set comes from the training split, so a class it lacks cannot be learnt: fix the label, or "
            if self.from_train else "fix the label, or "
        )
        raise ValueError(f"{where}: unknown label {value!r}; allowed labels: {allowed_labels(self.names)}; {origin}{CLASS_NAMES_HINT}")


# ---------------------------------------------------------------- texts and images


def clean_text(row: RawRow) -> str | None:
    """The row's text as a str (bytes decoded leniently); None when it is empty: blank or only invisible
    characters, by `text_problems`, the rule of serving too (the tokenizer's part of it comes in `preflight`)."""
    text = row.text.decode("utf-8", errors="replace") if isinstance(row.text, bytes) else row.text
    return None if text is None or text_problems([str(text)]) else str(text)


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


def raise_image_problems(split: str, rows: list[RawRow], problems: dict[int, str]) -> None:
    listed = "; ".join(f"{rows[index].where}: {problem}" for index, problem in list(problems.items())[:MAX_LISTED_PROBLEMS])
    raise ValueError(
        f"{len(problems)} image(s) of split {split!r} missing or unreadable, e.g. {listed}. "
        "Pass missing_image='skip' to drop these pairs or missing_image='blank' to keep them with a blank image "
        "(run_sppscl.py: --missing_image skip|blank)."
    )


def raise_empty_texts(split: str, rows: list[RawRow], empty: list[int]) -> None:
    listed = "; ".join(f"{rows[index].where}: the text is empty or has only invisible characters" for index in empty[:MAX_LISTED_PROBLEMS])
    raise ValueError(
        f"{len(empty)} empty text(s) in split {split!r}: {listed}. "
        "Fix or remove these rows, or pass empty_text='skip' (run_sppscl.py: --empty_text skip) to drop them."
    )


# ---------------------------------------------------------------- assembling


def build_loaded_data(
    raw: dict[str, list[RawRow]],
    label_names: list[str] | None,
    missing_image: str,
    report: dict[str, Any],
    verify_pixels: bool,
    image_feature: datasets.Image | None = None,
) -> LoadedData:
    """Validate texts, labels and images of every split against one label set and assemble the `DatasetDict`."""
    from_train = label_names is None and "train" in raw
    names = [str(name) for name in (label_names if label_names is not None else infer_label_names(raw))]
    mapper = LabelMapper(names, from_train)
    features = Features({"id": Value("string"), "text": Value("string"), "image": image_feature or Value("string"), "label": ClassLabel(names=names)})
    splits = {}
    for split in (name for name in SPLIT_ORDER if name in raw):
        columns = split_columns(split, raw[split], mapper, missing_image, report, verify_pixels)
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    if "train" in splits:
        counts = Counter(splits["train"]["label"])
        report["classes_without_train_rows"] = [name for index, name in enumerate(names) if counts[index] == 0]
        if report["classes_without_train_rows"]:
            logger.warning("%s: no training pair has class(es) %s; the model cannot learn them", report["source"], report["classes_without_train_rows"])
    return LoadedData(DatasetDict(splits), names, report)


def split_columns(split: str, rows: list[RawRow], mapper: LabelMapper, missing_image: str, report: dict[str, Any], verify_pixels: bool) -> dict[str, list]:
    """The four columns of one split, after validation, the `empty_text` and the `missing_image` policies."""
    texts = [clean_text(row) for row in rows]
    empty = [index for index, text in enumerate(texts) if text is None]
    if empty and report["empty_text"] == "error":
        raise_empty_texts(split, rows, empty)
    before = mapper.case_matched
    labels = [mapper(row.label, row.where) for row in rows]
    report["case_normalised_labels"][split] = mapper.case_matched - before
    if report["case_normalised_labels"][split]:
        logger.warning("%s, split %s: %d label(s) matched to a class by case only", report["source"], split, report["case_normalised_labels"][split])
    problems = {} if report["text_only"] else image_problems(rows, verify_pixels)
    if problems and missing_image == "error":
        raise_image_problems(split, rows, problems)
    report["skipped"][split] = len(problems) if missing_image == "skip" else 0
    report["blanked"][split] = len(problems) if missing_image == "blank" else 0
    report["dropped_texts"][split] = len(empty)
    if problems:
        action = "dropped" if missing_image == "skip" else "kept with a blank image"
        logger.warning("%s, split %s: %d of %d pairs have a missing or unreadable image; %s", report["source"], split, len(problems), len(rows), action)
    if empty:
        logger.warning("%s, split %s: %d pair(s) with an empty text dropped, e.g. %s", report["source"], split, len(empty), rows[empty[0]].where)
    dropped = set(empty) | (set(problems) if missing_image == "skip" else set())
    keep = [index for index in range(len(rows)) if index not in dropped]
    report["rows"][split] = len(keep)
    return {
        "id": [rows[index].id for index in keep],
        "text": [texts[index] for index in keep],
        "image": [None if index in problems else rows[index].image for index in keep],
        "label": [labels[index] for index in keep],
    }


def image_problems(rows: list[RawRow], verify_pixels: bool) -> dict[int, str]:
    """Row index -> problem, for the rows whose image is missing or unreadable."""
    problems = {}
    for index, row in enumerate(rows):
        problem = image_problem(row.image, describe_image(row.image), verify_pixels)
        if problem is not None:
            problems[index] = problem
    return problems


def describe_image(image: Any) -> str:
    if isinstance(image, dict):
        return image.get("path") or "<embedded image bytes>"
    return str(image)


__all__ = ["LoadedData", "RawRow", "blank_image", "build_loaded_data", "infer_label_names", "integer_label", "new_report"]
