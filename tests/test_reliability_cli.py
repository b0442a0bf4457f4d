"""run_sppscl.py with a saved model: train -> save -> `--model_name_or_path` evaluates and predicts as the run did."""

import csv
import json

import pytest
from transformers import AutoModel

from test_run_sppscl import run_script, tower_folders, write_clmlf_folder  # noqa: F401 (tower_folders is a fixture)


def read_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_saved_model_evaluates_and_predicts_with_the_saved_runs_numbers(tmp_path, tower_folders):  # noqa: F811
    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 24, "validation": 12, "test": 9})
    trained = tmp_path / "trained"
    result = run_script(
        ["--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
         "--vision_model_name_or_path", str(tower_folders / "vision"), "--output_dir", str(trained),
         "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
         "--report_to", "none", "--freeze_text_model", "true", "--train_sampling_strategy", "random"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = AutoModel.from_pretrained(trained)
    assert not any(p.requires_grad for p in [*model.text_model.parameters(), *model.vision_model.parameters()])
    assert all(p.requires_grad for p in model.classifier.parameters())

    reloaded = tmp_path / "reloaded"
    result = run_script(
        ["--model_name_or_path", str(trained), "--data_dir", str(data), "--output_dir", str(reloaded),
         "--do_eval", "--do_predict", "--report_to", "none"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((trained / "eval_results.json").read_text())
    again = json.loads((reloaded / "eval_results.json").read_text())
    for name in ("eval_accuracy", "eval_weighted_f1", "eval_macro_f1", "eval_loss"):
        assert again[name] == pytest.approx(saved[name], abs=1e-6), name
    assert read_rows(reloaded / "predictions_test.csv") == read_rows(trained / "predictions_test.csv")
