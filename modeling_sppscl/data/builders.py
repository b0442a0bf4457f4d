"""Reading through `datasets`: one data file by `load_dataset`'s builders ("csv", "json", "text"), or a datasets
dataset (a `save_to_disk` folder or anything `load_dataset` takes), for the readers.

The builders parse; this module adds what the readers promise on top: lenient UTF-8 (a file that is not valid
UTF-8 is read from a repaired copy whose undecodable bytes are U+FFFD, and is named in a warning and in the
report), empty files as empty splits, CSV columns read as strings, and parse errors that name the line or item.
"""

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import datasets
import pandas
from datasets import ClassLabel, DatasetDict


logger = logging.getLogger(__name__)

# Names under which data sets ship their splits, mapped to ours.
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "val": "validation", "test": "test"}


def decoded_text(path: Path, report: dict) -> tuple[str, bool]:
    """The file's text and whether it was valid UTF-8; bytes that are not become U+FFFD (warned, reported)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError as error:
        logger.warning("%s is not valid UTF-8 (first bad byte at offset %d); undecodable bytes replaced by U+FFFD", path, error.start)
        report["undecodable_files"].append(str(path))
        return data.decode("utf-8-sig", errors="replace"), False


def holds_no_records(text: str, builder: str) -> bool:
    """Whether a file holds no record (empty, only blank lines, `[]`, or a CSV header alone): the builders
    refuse such files, while an empty split is a fact for the validation to judge."""
    if builder == "json":
        return re.fullmatch(r"\s*(\[\s*\])?\s*", text) is not None
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) <= (1 if builder == "csv" else 0)


def read_with_builder(path: Path, builder: str, report: dict, **options: Any) -> tuple[datasets.Dataset | None, str]:
    """The file read by `datasets.load_dataset(builder)` into memory (None when it holds no record), and its text.

    The builders read UTF-8 only, so a file that is not is read from a repaired copy. Each read uses a fresh
    cache folder, removed afterwards: nothing stale is ever reused and nothing piles up.
    """
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    text, valid = decoded_text(path, report)
    if holds_no_records(text, builder):
        return None, text
    with tempfile.TemporaryDirectory(prefix="sppscl-read-") as scratch:
        source = path.resolve()
        if not valid:
            source = Path(scratch) / f"repaired{path.suffix}"
            source.write_text(text, encoding="utf-8")
        try:
            dataset = datasets.load_dataset(
                builder, data_files=str(source), split="train", cache_dir=str(Path(scratch) / "cache"), keep_in_memory=True, **options
            )
        except Exception as error:  # the builders wrap pandas / pyarrow errors; say where the file is broken
            raise ValueError(f"{path}{locate_parse_error(text, builder, error)}") from error
    return dataset, text


def locate_parse_error(text: str, builder: str, error: Exception) -> str:
    """", line N: what is wrong" for a builder's error: the line or item of a malformed JSON file is found again
    by `json` (the builders do not say where); other errors keep their cause's words (pandas names CSV lines)."""
    cause = error.__cause__ or error
    if builder == "json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as json_error:
            return f": invalid JSON ({json_error})"
        index = next((index for index, item in enumerate(items) if not isinstance(item, dict)), None)
        if index is not None:
            return f", item {index}: expected a JSON object, got {str(items[index])[:200]}"
    elif builder == "json":
        for number, line in enumerate(text.split("\n"), start=1):
            try:
                record = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError as json_error:
                return f", line {number}: invalid JSON ({json_error})"
            if not isinstance(record, dict):
                return f", line {number}: expected a JSON object, got {line[:200]}"
    return f": cannot read it as {builder}: {type(cause).__name__}: {cause}"


def read_csv_as_strings(path: Path, separator: str, report: dict) -> tuple[datasets.Dataset | None, str]:
    """A CSV / TSV file with every column a string: no type guessing (`007` stays `007`), no NA guessing
    (`NA` and `null` stay texts); lines holding no value are dropped later, so that line numbers stay countable."""
    options = {"sep": separator, "encoding": "utf-8-sig", "keep_default_na": False, "na_filter": False, "skip_blank_lines": False}
    try:
        header = pandas.read_csv(path, sep=separator, nrows=0, encoding="utf-8-sig", encoding_errors="replace").columns
    except (pandas.errors.EmptyDataError, FileNotFoundError):
        header = []  # read_with_builder says what is wrong
    features = datasets.Features({str(name): datasets.Value("string") for name in header}) if len(header) else None
    return read_with_builder(path, "csv", report, features=features, **options)


def csv_line_locator(dataset: datasets.Dataset | None):
    """Index -> "line N", where record N starts: the header is line 1 and a value may hold line breaks."""
    if dataset is None:
        return None
    table = dataset.to_dict()
    starts, line = [], 2
    for values in zip(*table.values()):
        starts.append(line)
        line += 1 + sum(value.count("\n") for value in values if value)
    return lambda index: f"line {starts[index]}"


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

