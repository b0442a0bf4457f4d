"""predictions_*.csv: every id beside its own prediction (whatever the sampling strategy), and no cell a spreadsheet
would run as a formula."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset
from transformers import Trainer

from conftest import TINY_WORDS
from modeling_sppscl.reporting.predictions import write_predictions
from modeling_sppscl.training.trainer import SppSclTrainer
from test_run_sppscl import tower_folders  # noqa: F401 (a fixture)


REPO_ROOT = Path(__file__).resolve().parents[1]
COLOURS = [[200, 0, 0], [0, 200, 0], [0, 0, 200]]


def write_varied_length_folder(folder, sizes: dict[str, int]) -> None:
    """A CLMLF folder whose label shows in the image colour and whose texts run from 1 to 30 words, so that a
    length-grouped order differs from the file's order."""
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    for name, count in sizes.items():
        rows = []
        for index in range(count):
            label, row_id = int(rng.integers(3)), f"{name}{index}"
            rows.append({"id": row_id, "text": " ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 31)))), "emotion_label": label})
            noisy = np.clip(np.array(COLOURS[label]) + rng.integers(-40, 40, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            PIL.Image.fromarray(noisy).save(folder / "images" / f"{row_id}.jpg")
        (folder / f"{name}.json").write_text(json.dumps(rows))


def run_in_process(monkeypatch, args: list[str]) -> dict:
    import run_sppscl

    monkeypatch.setattr(sys, "argv", ["run_sppscl.py", *args])
    return run_sppscl.run()


def read_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_arguments(data, output, tower_folders) -> list[str]:
    return [
        "--data_dir", str(data), "--class_names", "positive,neutral,negative",
        "--text_model_name_or_path", str(tower_folders / "text"), "--vision_model_name_or_path", str(tower_folders / "vision"),
        "--output_dir", str(output), "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "4",
        "--learning_rate", "1e-2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4",
        "--train_sampling_strategy", "group_by_length", "--report_to", "none", "--no_write_space", "--disable_tqdm", "true",
    ]


def test_eval_sampler_override_still_hooks_the_trainer():
    # The dataset-order evaluation rests on a private Trainer method: fail loudly if transformers renames it.
    assert "_get_eval_sampler" in vars(Trainer) and SppSclTrainer._get_eval_sampler is not Trainer._get_eval_sampler


@pytest.mark.slow
def test_predictions_csv_accuracy_is_the_reported_accuracy_under_group_by_length(tmp_path, tower_folders, monkeypatch):  # noqa: F811
    data = tmp_path / "data"
    write_varied_length_folder(data, {"train": 24, "dev": 40, "test": 40})
    output = tmp_path / "out"
    results = run_in_process(monkeypatch, run_arguments(data, output, tower_folders))
    assert_predictions_match_the_metrics(data, output, results)


def assert_predictions_match_the_metrics(data, output, results: dict) -> None:
    for split, prefix in (("validation", "eval"), ("test", "test")):
        rows = read_rows(output / f"predictions_{split}.csv")
        file_order = [item["id"] for item in json.loads((data / ("dev.json" if split == "validation" else "test.json")).read_text())]
        assert [row["id"] for row in rows] == file_order
        # Predictions of more than one class: a shuffled pairing would then change the accuracy.
        assert len({row["prediction"] for row in rows}) > 1
        recomputed = np.mean([row["label"] == row["prediction"] for row in rows])
        assert recomputed == pytest.approx(results[split][f"{prefix}_accuracy"], abs=1e-9), split


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_write_predictions_in_dataset_order(tmp_path, tower_folders):  # noqa: F811
    data = tmp_path / "data"
    write_varied_length_folder(data, {"train": 48, "dev": 37, "test": 29})  # uneven last batches
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO_ROOT / "run_sppscl.py"),
        *run_arguments(data, output, tower_folders),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    results = {split: json.loads((output / f"{prefix}_results.json").read_text()) for split, prefix in (("validation", "eval"), ("test", "test"))}
    assert_predictions_match_the_metrics(data, output, results)


def test_cells_a_spreadsheet_would_run_are_written_as_text(tmp_path):
    ids = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "plain", "a=b"]
    id2label = {0: "=cls", 1: "ok", 2: "-neg"}
    labels = [0, 1, 2, 0, 1, 2, 0, 1]
    logits = np.eye(3, dtype=np.float32)[[1, 2, 0, 0, 1, 2, 1, 1]] * 5
    path = tmp_path / "predictions_test.csv"
    write_predictions(path, Dataset.from_dict({"id": ids, "label": labels}), logits, id2label)
    rows = read_rows(path)
    assert [row["id"] for row in rows] == ["'" + cell for cell in ids[:6]] + ["plain", "a=b"]
    safe = {0: "'=cls", 1: "ok", 2: "'-neg"}
    assert [row["label"] for row in rows] == [safe[label] for label in labels]
    assert [row["prediction"] for row in rows] == [safe[int(index)] for index in logits.argmax(axis=1)]
    assert list(rows[0]) == ["id", "label", "prediction", "prob_=cls", "prob_ok", "prob_-neg"]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values())
