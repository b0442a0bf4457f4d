"""Labels: one rule, for every reader, that matches each split's labels to one label set.

- The label set is `label_names` when given (`--class_names`, a checkpoint's labels, a `ClassLabel` column, MVSA's
  or HFM's names for a CLMLF folder), else the training split's labels (the first split's when there is no
  training split): integer ids named "0".."n-1" when every label is an integer, else the sorted distinct names.
- A label of any split is matched to that set exactly, else as an id, else by case when exactly one class
  matches (`Positive` -> `positive`, counted). An integer is taken as an id only when the label set says which id
  is which: a given set, or one made of ids. Integer labels in one split and names in another are refused (they
  used to be mapped through the names' alphabetical order), and so is a label outside the set: a class the
  training split lacks cannot be learnt and would score 0 silently.
- A set holding two spellings of one name (`Positive` and `positive`) is refused, since the fix (one spelling, or
  `--class_names`) is the user's to choose.
"""

import json
from pathlib import Path
from typing import Any


MVSA_LABEL_NAMES = ["positive", "neutral", "negative"]
HFM_LABEL_NAMES = ["not_sarcastic", "sarcastic"]
CLASS_NAMES_HINT = "pass label_names=[...] (run_sppscl.py: --class_names a,b,c) in label-id order"


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


def labelled(rows) -> list[tuple[Any, str]]:
    """(label, where) of each raw row (a reader's `Dataset`, see `validation.raw_features`)."""
    return [(json.loads(label), where) for label, where in zip(rows["label"], rows["where"])]


def check_labels_present(raw: dict[str, Any]) -> None:
    for label, where in (pair for rows in raw.values() for pair in labelled(rows)):
        if label is None or not str(label).strip():
            raise ValueError(f"{where}: the label is missing; give every row a label")


def infer_label_names(rows, split: str) -> tuple[list[str], bool]:
    """The label set of one split's rows, and whether it is made of ids: integer ids named "0".."n-1", or the
    sorted distinct names."""
    pairs = labelled(rows)
    ids = [integer_label(label) for label, _ in pairs]
    if all(value is not None for value in ids):
        negative = next(((label, where) for (label, where), value in zip(pairs, ids) if value < 0), None)
        if negative is not None:
            raise ValueError(f"{negative[1]}: unknown label {negative[0]!r}; label ids must be 0 or more")
        return [str(index) for index in range(max(ids, default=-1) + 1)], True
    first_seen = {}
    for label, where in pairs:
        first_seen.setdefault(str(label).strip(), where)
    names = sorted(first_seen)
    refuse_case_twins(names, first_seen, f"split {split!r}")
    return names, False


class LabelMapper:
    """Raw labels (names or ids) to ids of one label set, counting the labels matched by case only.

    `origin` is "given" (the set says which id is which), or "ids" / "names" when the set was read from the
    labels of split `reference`."""

    def __init__(self, label_names: list[str], origin: str = "given", reference: str | None = None):
        refuse_case_twins(label_names, {}, "label_names")
        self.names = label_names
        self.by_case = {name.casefold(): index for index, name in enumerate(label_names)}
        self.origin = origin
        self.reference = reference
        self.case_matched = 0

    def __call__(self, value: Any, where: str) -> int:
        text = value.strip() if isinstance(value, str) else None
        if text in self.names:
            return self.names.index(text)
        as_int = integer_label(value)
        if as_int is not None and 0 <= as_int < len(self.names) and self.origin != "names":
            return as_int
        if text is not None and text.casefold() in self.by_case:
            self.case_matched += 1
            return self.by_case[text.casefold()]
        raise ValueError(f"{where}: {self.refusal(value, as_int)}")

    def refusal(self, value: Any, as_int: int | None) -> str:
        if self.origin == "names" and as_int is not None:
            return (
                f"label {value!r} is an integer id, but the labels of split {self.reference!r} are names {self.names}, "
                f"so which id is which class is unknown; write names, or {CLASS_NAMES_HINT}"
            )
        if self.origin == "ids" and as_int is None:
            return (
                f"label {value!r} is a name, but the labels of split {self.reference!r} are integer ids "
                f"0..{len(self.names) - 1}, so which class it is is unknown; write ids, or {CLASS_NAMES_HINT}"
            )
        origin = (
            "the label set comes from the training split, so a class it lacks cannot be learnt: fix the label, or "
            if self.reference == "train" else "fix the label, or "
        )
        return f"unknown label {value!r}; allowed labels: {allowed_labels(self.names)}; {origin}{CLASS_NAMES_HINT}"


def label_mapper(raw: dict[str, Any], label_names: list[str] | None) -> LabelMapper:
    """The mapper of every split's labels: to `label_names` when given, else to the training split's labels."""
    check_labels_present(raw)
    if label_names is not None:
        return LabelMapper([str(name) for name in label_names])
    reference = "train" if "train" in raw else next(iter(raw))
    names, from_ids = infer_label_names(raw[reference], reference)
    return LabelMapper(names, "ids" if from_ids else "names", reference)


def clmlf_label_names(raw: dict[str, Any], folder: Path) -> list[str]:
    """MVSA's or HFM's names, from the labels of every split and the folder's name (see `load_clmlf_folder`)."""
    largest = 0
    for label, where in (pair for rows in raw.values() for pair in labelled(rows)):
        as_int = integer_label(label)
        if as_int is None or not 0 <= as_int <= 2:
            raise ValueError(
                f"{where}: unknown label {label!r}; CLMLF labels are ids 0..2 (MVSA: {MVSA_LABEL_NAMES}) "
                f"or 0..1 (HFM: {HFM_LABEL_NAMES}); for another label set {CLASS_NAMES_HINT}"
            )
        largest = max(largest, as_int)
    name = folder.resolve().name.lower()
    named = "mvsa" if "mvsa" in name else "hfm" if ("hfm" in name or "sarcas" in name) else None
    if largest == 2 and named == "hfm":
        raise ValueError(f"{folder}: the folder's name says HFM (labels 0..1) but a label 2 occurs; {CLASS_NAMES_HINT}")
    if largest == 2 or named == "mvsa":
        return MVSA_LABEL_NAMES
    if named == "hfm":
        return HFM_LABEL_NAMES
    raise ValueError(
        f"{folder}: the labels are only 0 and 1, which fits HFM ({HFM_LABEL_NAMES}) as well as MVSA without its "
        f"negative class ({MVSA_LABEL_NAMES}); name the folder after its data set (hfm..., mvsa...) or "
        f"{CLASS_NAMES_HINT}: --class_names {','.join(HFM_LABEL_NAMES)} or --class_names {','.join(MVSA_LABEL_NAMES)}"
    )


__all__ = ["CLASS_NAMES_HINT", "HFM_LABEL_NAMES", "MVSA_LABEL_NAMES", "LabelMapper", "clmlf_label_names", "integer_label", "label_mapper"]
