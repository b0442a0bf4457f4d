"""The checks `run_sppscl.py` makes before any tower or training step runs, so that no bad input is found late.

The readers have already checked every row (labels against one label set, texts, images decoded at reduced
size, the `--missing_image` policy; see `validation`). What needs the model and its processor comes here, in
one pass over every split:

- texts that the tokenizer turns into no token but its special ones are refused, or dropped with
  `--empty_text skip`: the model needs at least one token between the summary and separator tokens (the rule is
  `processing_sppscl.text_problems`, the one serving applies too);
- texts are capped at what the text tower can take (`max_position_embeddings` minus the tower's position
  offset, RoBERTa's padding offset for one, and the tokenizer's `model_max_length`); a processor that pads to
  a fixed length the tower cannot take (the paper variant's 202) is refused;
- the splits that `--do_train`, `--do_eval` and `--do_predict` need must be there and hold a pair;
- with `--strict_data`, the questionable rows the readers found (see `consistency`) are refused too.

All problems are refused together, in one message naming file, row and id and the fix; `check_splits` makes
the checks that need no model (the splits, `--strict_data`) alone, before any tower loads. Every row not used as
given is logged and written to `data_report.json`: per split, rows holding no value, images skipped, blanked or
read from outside the data folder, texts dropped or truncated, labels matched by case, pairs beyond
`--max_*_samples`; and the questionable rows, by kind.
"""

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from datasets import Dataset

from .consistency import QUESTIONABLE_KINDS, questionable_problems
from ..processing_sppscl import text_problems
from .validation import MAX_LISTED_PROBLEMS


logger = logging.getLogger(__name__)

SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}
SPLIT_FILES = {
    "train": "train.json / train.txt / --train_file",
    "validation": "dev.json or valid.json / valid.txt / --validation_file",
    "test": "test.json / test.txt / --test_file",
}
# Tokenizers without a known limit report this (transformers' VERY_LARGE_INTEGER).
UNKNOWN_TOKENIZER_LIMIT = int(1e20)


def check_output_dir(output_dir: str) -> None:
    """Refuse an output folder that cannot be created or written, before anything is computed."""
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sppscl-write-check-"):
            pass
    except OSError as error:
        raise ValueError(f"--output_dir {folder} is not writable ({type(error).__name__}: {error}); pass a folder you can write to") from error


def text_tower_limit(model, tokenizer) -> tuple[int | None, str]:
    """The most tokens the text tower can take, and why (None when nothing bounds it)."""
    limits = []
    positions = getattr(model.config.text_config, "max_position_embeddings", None)
    if positions:
        embeddings = getattr(model.text_model, "embeddings", None)
        # RoBERTa-like towers number positions from padding_idx + 1, so that many positions are never used.
        offset = embeddings.padding_idx + 1 if hasattr(embeddings, "create_position_ids_from_input_ids") else 0
        limits.append((positions - offset, f"max_position_embeddings {positions}" + (f" minus the position offset {offset}" if offset else "")))
    if tokenizer.model_max_length < UNKNOWN_TOKENIZER_LIMIT:
        limits.append((tokenizer.model_max_length, f"the tokenizer's model_max_length {tokenizer.model_max_length}"))
    return min(limits) if limits else (None, "")


def cap_text_length(model, processor) -> None:
    """Lower `processor.text_max_length` to the text tower's limit; refuse a fixed padding it cannot take."""
    limit, reason = text_tower_limit(model, processor.tokenizer)
    if limit is None or processor.text_max_length <= limit:
        return
    if processor.pad_to_max_length:
        raise ValueError(
            f"the {model.config.variant!r} variant pads every text to {processor.text_max_length} tokens, but the text tower "
            f"takes at most {limit} ({reason}); use a text tower with at least {processor.text_max_length} positions, or --variant default"
        )
    logger.info("Texts are truncated to %d tokens, the text tower's limit (%s)", limit, reason)
    processor.text_max_length = limit


def token_ids(dataset: Dataset, tokenizer) -> list[list[int]]:
    """Each text's token ids, without the special tokens the tokenizer adds."""
    if len(dataset) == 0:  # tokenizers fail on an empty batch
        return []
    return tokenizer(list(dataset["text"]), add_special_tokens=False)["input_ids"]


def check_before_training(loaded, model, processor, training_args, limits: dict[str, int | None], empty_text: str = "error",
                          report_dir: str | None = None, strict_data: bool = False):
    """The splits of `loaded`, checked for this model and run (see the module's docstring); token-less texts are
    dropped under `empty_text="skip"`. Raises one `ValueError` listing every problem."""
    cap_text_length(model, processor)
    report = loaded.report
    problems, splits, summary = [], dict(loaded.splits), {}
    special = processor.tokenizer.num_special_tokens_to_add(pair=False)
    for split, dataset in splits.items():
        ids = token_ids(dataset, processor.tokenizer)
        tokenless = sorted(text_problems(list(dataset["text"]), processor.tokenizer, ids))
        where = report.get("files", {}).get(split, report.get("source", "the data"))
        if tokenless and empty_text != "skip":
            listed = "; ".join(f"{where}, row {index} (id {dataset[index]['id']!r}): {dataset[index]['text']!r}" for index in tokenless[:MAX_LISTED_PROBLEMS])
            problems.append(
                f"{len(tokenless)} text(s) of split {split!r} have no token the tokenizer knows, e.g. {listed}; "
                "fix or remove these rows, or pass --empty_text skip to drop them"
            )
        if tokenless and empty_text == "skip":
            dropped = set(tokenless)
            splits[split] = dataset.select([index for index in range(len(dataset)) if index not in dropped])
        summary[split] = split_summary(report, split, len(splits[split]), len(tokenless) if empty_text == "skip" else 0,
                                       sum(len(row) + special > processor.text_max_length for row in ids), processor.text_max_length)
        if limits.get(split) is not None:
            summary[split]["left_out_by_max_samples"] = max(0, len(splits[split]) - limits[split])
    problems += split_problems(splits, report, training_args, limits, strict_data)
    if problems:
        raise ValueError("The data cannot be used for this run:\n- " + "\n- ".join(problems))
    log_summary(summary, report, report_dir)
    return splits


def check_splits(loaded, training_args, limits: dict[str, int | None], strict_data: bool = False) -> None:
    """The checks of `check_before_training` that need no model or tokenizer (the splits the run needs, and
    `--strict_data`), so that `run_sppscl.py` refuses such data before any tower loads."""
    problems = split_problems(loaded.splits, loaded.report, training_args, limits, strict_data)
    if problems:
        raise ValueError("The data cannot be used for this run:\n- " + "\n- ".join(problems))


def split_problems(splits: dict[str, Dataset], report: dict[str, Any], training_args, limits: dict[str, int | None],
                   strict_data: bool) -> list[str]:
    problems = missing_split_problems(splits, report, training_args, limits)
    if strict_data:
        problems += [f"{problem} (--strict_data: fix the data, or leave out --strict_data to go on with a warning)"
                     for problem in questionable_problems(report)]
    return problems


def missing_split_problems(splits: dict[str, Dataset], report: dict[str, Any], training_args, limits: dict[str, int | None]) -> list[str]:
    """What `--do_train` / `--do_eval` / `--do_predict` need and the data lacks (an absent or empty split)."""
    wanted = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    problems = []
    for split, flag in SPLIT_FLAGS.items():
        if not wanted[split]:
            continue
        source = report.get("source", "the data")
        if split not in splits:
            eval_note = " (set by --eval_strategy too)" if split == "validation" else ""
            problems.append(f"{flag}{eval_note} needs a {split} split, but {source} has none: add one ({SPLIT_FILES[split]}) or leave out {flag}")
        elif min(len(splits[split]), limits.get(split) if limits.get(split) is not None else len(splits[split])) == 0:
            problems.append(
                f"{flag} needs pairs in the {split} split, but none is left of {source} "
                f"(read {report.get('rows', {}).get(split, 0)}, skipped for their image {report.get('skipped', {}).get(split, 0)}, "
                f"limit {limits.get(split)}): fix the split or leave out {flag}"
            )
    return problems


def split_summary(report: dict[str, Any], split: str, rows: int, tokenless_dropped: int, truncated: int, max_length: int) -> dict[str, Any]:
    blanked = rows if report.get("text_only") else report.get("blanked", {}).get(split, 0)
    return {
        "pairs": rows,
        "rows_without_value": report.get("blank_rows", {}).get(split, 0),
        "skipped_for_image": report.get("skipped", {}).get(split, 0),
        "blank_image": blanked,
        "dropped_for_text": report.get("dropped_texts", {}).get(split, 0) + tokenless_dropped,
        "labels_matched_by_case": report.get("case_normalised_labels", {}).get(split, 0),
        "images_outside_data_dir": report.get("images_outside_data_dir", {}).get(split, 0),
        f"texts_truncated_to_{max_length}_tokens": truncated,
    }


def log_summary(summary: dict[str, dict[str, Any]], report: dict[str, Any], report_dir: str | None) -> None:
    for split, numbers in summary.items():
        logger.info("Data %s: %s", split, ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in numbers.items()))
    if report.get("text_only"):
        logger.warning("%s has no images: every pair gets a blank image, so the model learns from the texts alone", report.get("source"))
    if report_dir is not None:
        document = {"source": report.get("source"), "text_only": report.get("text_only", False), "undecodable_files": report.get("undecodable_files", []),
                    "classes_without_train_rows": report.get("classes_without_train_rows", []), "splits": summary,
                    **{kind: report[kind] for kind in QUESTIONABLE_KINDS if kind in report}}
        (Path(report_dir) / "data_report.json").write_text(json.dumps(document, indent=2) + "\n")


def update_image_counts(report_dir: str, report: dict[str, Any]) -> None:
    """`data_report.json` after the images' one decode (see `validation.apply_pixel_problems`), which comes after
    these checks: each split's pairs and images skipped or blanked, from `report`."""
    path = Path(report_dir) / "data_report.json"
    if not path.is_file():
        return
    document = json.loads(path.read_text())
    for split, numbers in document["splits"].items():
        skipped = report.get("skipped", {}).get(split, 0) - numbers["skipped_for_image"]
        numbers["pairs"] -= skipped
        numbers["skipped_for_image"] += skipped
        if not document["text_only"]:
            numbers["blank_image"] = report.get("blanked", {}).get(split, 0)
    path.write_text(json.dumps(document, indent=2) + "\n")


__all__ = ["cap_text_length", "check_before_training", "check_output_dir", "check_splits", "text_tower_limit", "update_image_counts"]
