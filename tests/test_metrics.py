"""The sppscl_classification metric and the Trainer hook, against scores counted by hand."""

import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import EvalPrediction

from modeling_sppscl.reporting.metrics import METRIC_DIR, build_compute_metrics, confusion_matrix, load_sppscl_metric
from tests.helpers_data import REPO_ROOT


NAMES = ["positive", "neutral", "negative", "mixed"]
# Class 3 ("mixed") occurs nowhere: it must still be scored (as 0) and keep its row and column.
REFERENCES = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
PREDICTIONS = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]


def safe_ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def brute_force_scores(predictions: list[int], references: list[int], num_classes: int) -> dict:
    """Accuracy, per-class precision/recall/F1, weighted and macro F1 and the confusion matrix, by counting."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for predicted, true in zip(predictions, references):
        matrix[true][predicted] += 1
    scores = {"accuracy": sum(p == r for p, r in zip(predictions, references)) / len(references), "confusion_matrix": matrix}
    f1s, supports = [], []
    for label in range(num_classes):
        true_positive = matrix[label][label]
        predicted_count = sum(matrix[row][label] for row in range(num_classes))
        support = sum(matrix[label])
        precision, recall = safe_ratio(true_positive, predicted_count), safe_ratio(true_positive, support)
        f1s.append(safe_ratio(2 * precision * recall, precision + recall))
        supports.append(support)
        scores[f"precision_{label}"], scores[f"recall_{label}"], scores[f"f1_{label}"] = precision, recall, f1s[-1]
    scores["weighted_f1"] = sum(f1 * support for f1, support in zip(f1s, supports)) / sum(supports)
    scores["macro_f1"] = sum(f1s) / num_classes
    return scores


@pytest.fixture(scope="module")
def metric():
    return load_sppscl_metric()


def test_metric_gives_the_hand_counts_of_the_example(metric):
    """The example counted by hand (the brute force below is checked against the same numbers)."""
    # Rows are true classes: class 0 has 3 of its 4 right, class 1 1 of 2, class 2 3 of 4, class 3 never occurs.
    matrix = [[3, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    # Precision = recall = F1 per class: 3/4, 1/2, 3/4 and 0; weights 4, 2, 4, 0 of 10; macro over all 4 classes.
    hand = {"accuracy": 0.7, "f1_0": 0.75, "f1_1": 0.5, "f1_2": 0.75, "f1_3": 0.0,
            "weighted_f1": (4 * 0.75 + 2 * 0.5 + 4 * 0.75) / 10, "macro_f1": (0.75 + 0.5 + 0.75 + 0.0) / 4}
    scores = metric.compute(predictions=PREDICTIONS, references=REFERENCES, label_names=NAMES)
    brute = brute_force_scores(PREDICTIONS, REFERENCES, 4)
    assert scores["confusion_matrix"] == brute["confusion_matrix"] == matrix
    for key, value in hand.items():
        name = f"f1_{NAMES[int(key[3:])]}" if key.startswith("f1_") else key
        assert scores[name] == pytest.approx(value) and brute[key] == pytest.approx(value), key


def test_metric_matches_brute_force_with_names(metric):
    scores = metric.compute(predictions=PREDICTIONS, references=REFERENCES, label_names=NAMES)
    expected = brute_force_scores(PREDICTIONS, REFERENCES, 4)
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert scores[key] == pytest.approx(expected[key])
    for index, name in enumerate(NAMES):
        for kind in ("precision", "recall", "f1"):
            assert scores[f"{kind}_{name}"] == pytest.approx(expected[f"{kind}_{index}"])
    assert scores["f1_mixed"] == 0.0 and scores["precision_mixed"] == 0.0
    assert scores["confusion_matrix"] == expected["confusion_matrix"]


def test_metric_class_count_from_num_labels_or_data(metric):
    assert metric.compute(predictions=[0, 1], references=[0, 0], num_labels=3)["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]
    scores = metric.compute(predictions=[1, 1], references=[0, 1])
    assert set(key for key in scores if key.startswith("f1_")) == {"f1_0", "f1_1"}


def test_metric_rejects_out_of_range_ids_and_duplicate_names(metric):
    with pytest.raises(ValueError, match="0..1"):
        metric.compute(predictions=[0, 2], references=[0, 1], label_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        metric.compute(predictions=[0], references=[0], label_names=["a", "a"])


@pytest.mark.slow
def test_metric_loads_by_path_in_a_fresh_offline_process():
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = (
        "import evaluate, sys; m = evaluate.load(sys.argv[1]); "
        "print(m.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)['accuracy'])"
    )
    result = subprocess.run([sys.executable, "-c", script, str(METRIC_DIR)], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(2 / 3)


def one_hot_logits(predictions: list[int], num_classes: int) -> np.ndarray:
    logits = np.random.default_rng(0).normal(size=(len(predictions), num_classes)).astype(np.float32)
    logits[np.arange(len(predictions)), predictions] += 10.0
    return logits


@pytest.mark.parametrize("as_tuple", [False, True])
def test_compute_metrics_for_trainer(as_tuple):
    id2label = {str(index): name for index, name in enumerate(NAMES)}  # as after a JSON round trip
    logits = one_hot_logits(PREDICTIONS, 4)
    outputs = (logits, np.zeros((10, 5), dtype=np.float32)) if as_tuple else logits
    scores = build_compute_metrics(id2label)(EvalPrediction(predictions=outputs, label_ids=np.array(REFERENCES)))
    expected = brute_force_scores(PREDICTIONS, REFERENCES, 4)
    assert scores["accuracy"] == pytest.approx(expected["accuracy"])
    assert scores["weighted_f1"] == pytest.approx(expected["weighted_f1"])
    assert scores["recall_neutral"] == pytest.approx(expected["recall_1"])
    assert "confusion_matrix" not in scores
    assert all(isinstance(value, float) for value in scores.values())
    assert len(scores) == 3 + 3 * len(NAMES)


def test_compute_metrics_rejects_gappy_id2label():
    with pytest.raises(ValueError, match="0..1"):
        build_compute_metrics({0: "a", 2: "c"})


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix([1, 1, 0], [0, 1, 1], ["a", "b"]) == [[0, 1], [1, 1]]
