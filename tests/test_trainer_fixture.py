"""One full two-step iteration through SppSclTrainer against the authors' code (golden fixture, float64)."""

import pytest
import torch
from torch.utils.data import Dataset

from modeling_sppscl import convert_reference_state_dict
from modeling_sppscl.training.trainer import SppSclTrainer

from conftest import reference_training_arguments
from test_reference_fixture import fixture, paper_config_with_small_towers, reference_model, reference_weights  # noqa: F401
from test_review_defects import GradientsAtOptimizerStep


UPDATE_TOL = 1e-8


class FeatureRows(Dataset):
    def __init__(self, hidden, image, labels):
        self.hidden, self.image, self.labels = hidden, image, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"text_hidden_states": self.hidden[:, index], "image_features": self.image[index], "labels": self.labels[index]}


def stack_rows(rows):
    return {
        "text_hidden_states": torch.stack([r["text_hidden_states"] for r in rows], dim=1),
        "image_features": torch.stack([r["image_features"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }


def run_one_iteration(tensors, labels, tmp_path, callbacks=()):
    model = reference_model(tensors, dropout=0.0)
    args = reference_training_arguments(tmp_path, per_device_train_batch_size=len(labels), max_steps=1, learning_rate=1e-4,
                                        weight_decay=1e-6, lr_scheduler_type="constant")
    data = FeatureRows(tensors["inputs.text_hidden_last4"], tensors["inputs.image_feature_map"], labels)
    trainer = SppSclTrainer(model=model, args=args, train_dataset=data, data_collator=stack_rows, callbacks=list(callbacks))
    trainer.train()
    return model, trainer


@pytest.mark.parametrize(
    "case, labels_of",
    [("train_mixed", lambda t: t["inputs.labels"]), ("train_one_class", lambda t: torch.zeros_like(t["inputs.labels"]))],
)
def test_two_step_update_matches_reference(fixture, tmp_path, case, labels_of):
    tensors, scalars = fixture
    model, trainer = run_one_iteration(tensors, labels_of(tensors), tmp_path)
    expected = convert_reference_state_dict(reference_weights(tensors, f"{case}.after."), model.config)
    state = model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, atol=UPDATE_TOL, rtol=0, msg=lambda m: f"{case} {key}: {m}")
    logged = trainer.state.log_history[0]
    assert logged["gate_step2_rate"] == (0.0 if scalars[f"{case}.gate.skip_inter"] else 1.0)
    assert logged["ce_loss"] * 5 == pytest.approx(scalars[f"{case}.loss1.ce_x5"], abs=1e-9)
    assert logged["intra_text_loss"] == pytest.approx(scalars[f"{case}.loss1.intra_text"], abs=1e-6)
    if f"{case}.loss2.inter" in scalars:
        assert logged["inter_loss"] == pytest.approx(scalars[f"{case}.loss2.inter"], abs=1e-6)


def test_skipped_step_two_moves_nothing_beyond_step_one(fixture, tmp_path):
    """With the gate closed the state after the iteration equals the state after a lone step 1."""
    tensors, scalars = fixture
    assert scalars["train_mixed.gate.skip_inter"]
    capture = GradientsAtOptimizerStep()
    model, trainer = run_one_iteration(tensors, tensors["inputs.labels"], tmp_path, callbacks=[capture])
    # Read as the Trainer's own (step-2) optimizer step is about to run, before it clears the gradients: step 1's
    # gradients left in place there would be applied a second time. They are zeros (a float16 GradScaler needs
    # gradients to unscale), and the optimizer skips that step: AdamW counts one step below.
    (at_step_two,) = capture.captured
    assert at_step_two and all(gradient is not None and not gradient.any() for gradient in at_step_two.values())
    optimizer_state = trainer.optimizer.state
    assert all(state["step"] == 1 for state in optimizer_state.values())
