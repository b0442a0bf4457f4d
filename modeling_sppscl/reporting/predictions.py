"""`predictions_<split>.csv`: one row per pair in dataset order (id, label, prediction, per-class probabilities).

Ids and label names come from the user's data, and a spreadsheet runs a cell that starts with `=`, `+`, `-` or
`@` (or a tab or carriage return, which some treat the same way) as a formula: such cells are written with a
leading `'`, which spreadsheets show as text.
"""

import csv
from pathlib import Path

import numpy as np
import torch


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """The cell, prefixed with `'` when a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def write_predictions(path: Path, dataset, logits: np.ndarray, id2label: dict[int, str]) -> None:
    probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()
    names = [spreadsheet_safe(id2label[index]) for index in range(len(id2label))]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "prediction", *[spreadsheet_safe(f"prob_{id2label[i]}") for i in range(len(id2label))]])
        for row_id, label, probs in zip(dataset["id"], dataset["label"], probabilities):
            writer.writerow([spreadsheet_safe(str(row_id)), names[int(label)], names[int(probs.argmax())], *[f"{p:.6f}" for p in probs]])


__all__ = ["spreadsheet_safe", "write_predictions"]
