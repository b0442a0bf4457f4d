"""Scores for `transformers.Trainer`: the `sppscl_classification` evaluate metric, loaded offline by path.

`build_compute_metrics` gives Trainer flat scalars only (accuracy, weighted_f1, macro_f1 and the per-class
precision/recall/F1), because Trainer logs, averages and writes every value it gets; the confusion matrix is a
table, so it stays out of that dict and `confusion_matrix` computes it on demand.
"""

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction


METRIC_DIR = Path(__file__).resolve().parent / "sppscl_classification"


def load_sppscl_metric() -> evaluate.EvaluationModule:
    """The project's metric, loaded from its folder (no Hub access); kept in memory so that several processes
    scoring at once do not share a cache file."""
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def label_names_from_id2label(id2label: Mapping[int | str, str]) -> list[str]:
    """Label names in id order; keys may be ints or, after a JSON round trip, strings."""
    by_id = {int(key): str(name) for key, name in id2label.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"id2label must map the ids 0..{len(by_id) - 1}, got ids {sorted(by_id)}")
    return [by_id[index] for index in range(len(by_id))]


def logits_of(predictions: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The logits among a model's outputs: the array itself, or the first element of a tuple of outputs."""
    logits = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (examples, classes), got shape {logits.shape}")
    return logits


def build_compute_metrics(id2label: Mapping[int | str, str]) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for `Trainer`: from an `EvalPrediction` (logits, or a tuple whose first element is
    the logits) to accuracy, weighted_f1 (the paper's F1), macro_f1 and `precision_/recall_/f1_<label name>`."""
    label_names = label_names_from_id2label(id2label)
    metric = load_sppscl_metric()

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted = logits_of(prediction.predictions).argmax(axis=-1)
        references = np.asarray(prediction.label_ids).reshape(-1)
        scores = metric.compute(predictions=predicted, references=references, label_names=label_names)
        return {name: value for name, value in scores.items() if name != "confusion_matrix"}

    return compute_metrics


def confusion_matrix(predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray, label_names: Sequence[str]) -> list[list[int]]:
    """Counts of (true class, predicted class) pairs: rows are true classes, in the order of `label_names`."""
    metric = load_sppscl_metric()
    return metric.compute(predictions=predictions, references=references, label_names=list(label_names))["confusion_matrix"]
