"""run_sppscl.py end to end: the built-in demo, a CLMLF folder with pretrained-tower folders, bad arguments."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from huggingface_hub import ModelCard
from transformers import AutoModel, BertModel, ResNetModel

from conftest import TINY_WORDS, tiny_bert_config, tiny_image_processor, tiny_resnet_config, tiny_tokenizer


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_script(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_sppscl.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_with_no_arguments_learns_from_both_modalities(tmp_path):
    result = run_script([], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(result.stdout.strip().splitlines()[-1].removeprefix("dev accuracy: "))
    # One modality alone can reach at most 2/3 on the demo set.
    assert accuracy > 0.8
    folder = tmp_path / "outputs" / "demo"
    model = AutoModel.from_pretrained(folder)
    assert model.config.id2label == {0: "positive", 1: "neutral", 2: "negative"}
    assert json.loads((folder / "eval_results.json").read_text())["eval_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert (folder / "predictions_test.csv").is_file() and (folder / "README.md").is_file()


def write_clmlf_folder(folder: Path, sizes: dict[str, int], missing: str | None = None) -> None:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    names = {"train": "train.json", "validation": "dev.json", "test": "test.json"}
    for split, count in sizes.items():
        rows = []
        for index in range(count):
            row_id = f"{split}{index}"
            label = index % 3
            rows.append({"id": row_id, "text": " ".join(rng.choice(TINY_WORDS, size=5)) + f" {TINY_WORDS[label]}", "emotion_label": label})
            if row_id != missing:
                colour = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]][label], dtype=np.uint8)
                PIL.Image.fromarray(np.tile(colour, (40, 48, 1))).save(folder / "images" / f"{row_id}.jpg")
        (folder / names[split]).write_text(json.dumps(rows))


@pytest.fixture(scope="module")
def tower_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    BertModel(tiny_bert_config()).save_pretrained(root / "text")
    tiny_tokenizer(root / "text")
    tiny_tokenizer(root / "tok").save_pretrained(root / "text")
    ResNetModel(tiny_resnet_config()).save_pretrained(root / "vision")
    tiny_image_processor().save_pretrained(root / "vision")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("variant, extra", [("default", []), ("paper", ["--cache_features", "false"])])
def test_clmlf_folder_run_writes_metrics_predictions_card_and_model(tmp_path, tower_folders, variant, extra):
    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 24, "validation": 12, "test": 9}, missing="test4")
    output = tmp_path / "out"
    result = run_script(
        ["--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
         "--vision_model_name_or_path", str(tower_folders / "vision"), "--variant", variant,
         "--output_dir", str(output), "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
         "--per_device_train_batch_size", "8", "--missing_image", "blank", "--report_to", "none", *extra],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with (output / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [f"test{i}" for i in range(9)]
    assert set(rows[0]) == {"id", "label", "prediction", "prob_positive", "prob_neutral", "prob_negative"}
    assert all(abs(sum(float(row[f"prob_{n}"]) for n in ("positive", "neutral", "negative")) - 1) < 1e-4 for row in rows)
    evaluation = json.loads((output / "eval_results.json").read_text())
    card = ModelCard.load(output / "README.md")
    card_numbers = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert card_numbers[("validation", "Accuracy")] == pytest.approx(evaluation["eval_accuracy"])
    assert card_numbers[("validation", "Weighted F1")] == pytest.approx(evaluation["eval_weighted_f1"])
    assert card_numbers[("validation", "Macro F1")] == pytest.approx(evaluation["eval_macro_f1"])
    model = AutoModel.from_pretrained(output)
    assert model.config.variant == variant
    assert "blank" in result.stderr and "test" in result.stderr  # the blanked image is reported


@pytest.mark.slow
def test_missing_image_is_an_error_naming_the_row_by_default(tmp_path, tower_folders):
    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 6, "validation": 3}, missing="train2")
    result = run_script(
        ["--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
         "--vision_model_name_or_path", str(tower_folders / "vision"), "--output_dir", str(tmp_path / "out"), "--do_train"],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "train2" in result.stderr and "train2.jpg" in result.stderr


@pytest.mark.slow
def test_bad_arguments_are_named(tmp_path):
    result = run_script(["--output_dir", str(tmp_path / "o"), "--do_train", "--sppscl_update", "three_step"], cwd=tmp_path)
    assert result.returncode == 2 and "argument --sppscl_update/--sppscl-update: invalid choice: 'three_step'" in result.stderr
    result = run_script(["--output_dir", str(tmp_path / "o"), "--do_train", "--config_overrides", "dropout"], cwd=tmp_path)
    assert result.returncode != 0 and "--config_overrides: expected name=value, got 'dropout'" in result.stderr


@pytest.mark.slow
def test_a_training_run_from_a_cache_miss_decodes_each_image_once(tmp_path, tower_folders, monkeypatch):
    """Reading checks the headers, the fingerprint hashes the files' bytes, and the vision tower's extraction is
    the one decode of each image (PIL's `ImageFile.load` reads the pixels of an opened file)."""
    import PIL.ImageFile

    import run_sppscl

    data = tmp_path / "data"
    write_clmlf_folder(data, {"train": 8, "validation": 4})
    decoded = []
    load = PIL.ImageFile.ImageFile.load

    def counting_load(image):
        if image.tile:  # pixels still in the file: this call reads them
            decoded.append(Path(image.filename).name)
        return load(image)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", counting_load)
    monkeypatch.setattr(sys, "argv", [
        "run_sppscl.py", "--data_dir", str(data), "--text_model_name_or_path", str(tower_folders / "text"),
        "--vision_model_name_or_path", str(tower_folders / "vision"), "--output_dir", str(tmp_path / "out"), "--do_train",
        "--do_eval", "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--write_space", "false",
        "--feature_cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true",
    ])
    run_sppscl.run()
    assert sorted(decoded) == sorted(path.name for path in (data / "images").iterdir())
    # The recipe fine-tunes the text tower: the vision tower's outputs are cached, for train and validation.
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "cache").iterdir()) == ["vision", "vision"]
