"""The classification scores that SPP-SCL reports: accuracy, weighted F1 (the paper's F1), macro F1, per-class
precision, recall and F1, and the confusion matrix.

Load it offline by folder path (evaluate finds the script named like its folder):

    metric = evaluate.load("modeling_sppscl/reporting/sppscl_classification")
    metric.compute(predictions=[0, 2, 1], references=[0, 1, 1], label_names=["positive", "neutral", "negative"])

This script is copied into evaluate's module cache when loaded, so it imports nothing from the project.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


_DESCRIPTION = """
Accuracy, weighted F1 (the F1 of the SPP-SCL paper and of CLMLF, averaged over classes weighted by their support),
macro F1, per-class precision/recall/F1 (keys `precision_<name>`, `recall_<name>`, `f1_<name>`) and the
confusion matrix (rows: true class, columns: predicted class). Every class of the label set is scored, also
one absent from both predictions and references (its scores are then 0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids.
    label_names (`list[str]`, optional): class names in id order; they name the per-class keys and fix the
        number of classes.
    num_labels (`int`, optional): the number of classes when `label_names` is not given (the names are then
        "0", "1", ...). Without either, the classes are 0 .. the largest id seen.
Returns:
    `accuracy`, `weighted_f1`, `macro_f1` (floats in [0, 1]), `precision_<name>`, `recall_<name>`, `f1_<name>`
    (floats) for every class, and `confusion_matrix` (list of lists of ints, rows = true class).
Examples:
    >>> metric = evaluate.load("modeling_sppscl/reporting/sppscl_classification")
    >>> metric.compute(predictions=[0, 1], references=[0, 0], num_labels=2)["accuracy"]
    0.5
"""

_CITATION = """
@article{sppscl,
  title = {SPP-SCL: Semi-Push-Pull Supervised Contrastive Learning for Image-Text Sentiment Analysis and Beyond},
}
"""


def class_names(predictions: np.ndarray, references: np.ndarray, label_names: list[str] | None, num_labels: int | None) -> list[str]:
    """The names of all classes, in id order; every id seen must be one of them."""
    if label_names is not None:
        names = [str(name) for name in label_names]
    elif num_labels is not None:
        names = [str(index) for index in range(num_labels)]
    else:
        largest = max(int(predictions.max(initial=0)), int(references.max(initial=0)))
        names = [str(index) for index in range(largest + 1)]
    if len(set(names)) != len(names):
        raise ValueError(f"sppscl_classification: label names must be unique, got {names}")
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"sppscl_classification: num_labels={num_labels} but {len(names)} label names {names}")
    seen = np.concatenate([predictions, references])
    if seen.size and (seen.min() < 0 or seen.max() >= len(names)):
        raise ValueError(f"sppscl_classification: class ids must lie in 0..{len(names) - 1} ({names}), got ids {sorted(set(seen.tolist()))}")
    return names


class SppSclClassification(evaluate.Metric):
    """Accuracy, weighted and macro F1, per-class scores and the confusion matrix of a classifier."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#classification-metrics"],
        )

    def _compute(self, predictions, references, label_names: list[str] | None = None, num_labels: int | None = None) -> dict:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise ValueError("sppscl_classification: no predictions to score")
        names = class_names(predictions, references, label_names, num_labels)
        # Passing every class keeps absent ones in the per-class scores and the matrix (scored 0, not dropped).
        labels = list(range(len(names)))
        precision, recall, f1, _ = precision_recall_fscore_support(references, predictions, labels=labels, average=None, zero_division=0)
        scores = {
            "accuracy": float(accuracy_score(references, predictions)),
            "weighted_f1": float(f1_score(references, predictions, labels=labels, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0)),
        }
        for index, name in enumerate(names):
            scores[f"precision_{name}"] = float(precision[index])
            scores[f"recall_{name}"] = float(recall[index])
            scores[f"f1_{name}"] = float(f1[index])
        scores["confusion_matrix"] = confusion_matrix(references, predictions, labels=labels).tolist()
        return scores
