"""Rows that can be read but are questionable: each kind is logged as a warning and listed in the report (and in
`data_report.json`); `run_sppscl.py --strict_data` refuses them (see `preflight`).

- `conflicting_duplicate_ids`: ids that occur more than once in a split with different labels;
- `ids_also_in_train`: ids of the validation or test split that the training split holds too;
- `pairs_also_in_train`: validation or test pairs that the training split holds under another id: the same text
  (as written, outer spaces aside) and the same image (the same file content, or both without an image), so
  that the scores would reward memorising;
- `classes_without_validation_rows`: classes that no validation pair has, whose dev recall and F1 mean nothing.
"""

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

QUESTIONABLE_KINDS = ("conflicting_duplicate_ids", "ids_also_in_train", "pairs_also_in_train", "classes_without_validation_rows")
EVALUATED_SPLITS = ("validation", "test")
MAX_LISTED = 5


def image_fingerprint(image: Any) -> str | None:
    """What identifies an image's content: a digest of its bytes (a path is read; one that cannot be read stands
    for itself), None for no image."""
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if image is None:
        return None
    if isinstance(image, str):
        try:
            image = Path(image).read_bytes()
        except OSError:
            return image
    return hashlib.sha256(image).hexdigest()


def conflicting_duplicate_ids(columns: dict[str, list]) -> list[str]:
    labels = defaultdict(set)
    for row_id, label in zip(columns["id"], columns["label"]):
        labels[row_id].add(label)
    return [row_id for row_id, found in labels.items() if len(found) > 1]


def pairs_also_in_train(columns: dict[str, list], train: dict[str, list]) -> list[str]:
    """Ids of `columns`' pairs whose text and image a training pair with another id has; images are read only
    for pairs whose text matches."""
    train_rows = defaultdict(list)
    for index, text in enumerate(train["text"]):
        train_rows[text.strip()].append(index)
    train_ids = set(train["id"])
    train_fingerprints: dict[int, str | None] = {}
    found = []
    for row_id, text, image in zip(columns["id"], columns["text"], columns["image"]):
        matches = train_rows.get(text.strip(), [])
        if row_id in train_ids or not matches:
            continue
        for index in matches:
            if index not in train_fingerprints:
                train_fingerprints[index] = image_fingerprint(train["image"][index])
        fingerprint = image_fingerprint(image)
        if any(train_fingerprints[index] == fingerprint for index in matches):
            found.append(row_id)
    return found


def find_questionable_rows(columns: dict[str, dict[str, list]], label_names: list[str], report: dict[str, Any]) -> None:
    """Record in `report` (and log) the questionable rows of the splits' columns (id, text, image, label)."""
    report["conflicting_duplicate_ids"] = {split: conflicting_duplicate_ids(part) for split, part in columns.items()}
    train = columns.get("train")
    evaluated = [split for split in EVALUATED_SPLITS if split in columns and train is not None]
    train_ids = set(train["id"]) if train is not None else set()
    report["ids_also_in_train"] = {split: sorted(set(columns[split]["id"]) & train_ids) for split in evaluated}
    report["pairs_also_in_train"] = {split: pairs_also_in_train(columns[split], train) for split in evaluated}
    validation = columns.get("validation")
    present = set(validation["label"]) if validation else set()
    report["classes_without_validation_rows"] = (
        [name for index, name in enumerate(label_names) if index not in present] if validation and validation["id"] else []
    )
    for problem in questionable_problems(report):
        logger.warning("%s: %s", report["source"], problem)


def questionable_problems(report: dict[str, Any]) -> list[str]:
    """One line per kind of questionable row the report holds (see the module's docstring)."""
    lines = []
    for split, ids in report.get("conflicting_duplicate_ids", {}).items():
        if ids:
            lines.append(f"{len(ids)} id(s) of split {split!r} occur more than once with different labels, e.g. {ids[:MAX_LISTED]}")
    for split, ids in report.get("ids_also_in_train", {}).items():
        if ids:
            lines.append(f"{len(ids)} id(s) of split {split!r} are in the train split too, e.g. {ids[:MAX_LISTED]}")
    for split, ids in report.get("pairs_also_in_train", {}).items():
        if ids:
            lines.append(f"{len(ids)} pair(s) of split {split!r} have the text and image of a train pair, e.g. ids {ids[:MAX_LISTED]}")
    if report.get("classes_without_validation_rows"):
        lines.append(f"no validation pair has class(es) {report['classes_without_validation_rows']}: their dev scores mean nothing")
    return lines


__all__ = ["QUESTIONABLE_KINDS", "find_questionable_rows", "questionable_problems"]
