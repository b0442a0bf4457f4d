"""Ten two-step updates through SppSclTrainer against the authors' training loop (reference_trajectory.*,
float64): every update's losses, gate counts and decision, learning rate and parameter checksums, and the full
state after updates 5 and 10."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset
from transformers import TrainerCallback

from modeling_sppscl import SppSclModel, convert_reference_state_dict, gate_counts
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from test_reference_fixture import paper_config_with_small_towers, reference_weights


STATE_TOL = 1e-8
LOSS_TOL = 1e-9
# A checksum adds up to 2048 * 128 entries, each within STATE_TOL of the reference's.
CHECKSUM_RTOL = 1e-8


@pytest.fixture(scope="module")
def trajectory(fixture_dir):
    if not (fixture_dir / "reference_trajectory.safetensors").is_file():
        pytest.skip(f"trajectory fixture not found in {fixture_dir}")
    tensors = load_file(str(fixture_dir / "reference_trajectory.safetensors"))
    return tensors, json.loads((fixture_dir / "reference_trajectory.json").read_text())


class TrajectoryRows(Dataset):
    """Batch A's rows then batch B's: with sequential sampling and batches of 8, the updates alternate A, B."""

    def __init__(self, tensors):
        self.hidden = torch.cat([tensors["batchA.text_hidden_last4"], tensors["batchB.text_hidden_last4"]], dim=1)
        self.image = torch.cat([tensors["batchA.image_feature_map"], tensors["batchB.image_feature_map"]])
        self.labels = torch.cat([tensors["batchA.labels"], tensors["batchB.labels"]])

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


class RecordUpdates(TrainerCallback):
    """After each update: every state entry's sum and sum of absolute values, the full state after `keep_after`,
    and the gate's counts on the batch (recomputed from the second forward's embeddings)."""

    def __init__(self, keep_after=(5, 10)):
        self.checksums: list[dict[str, tuple[float, float]]] = []
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.keep_after = keep_after

    def on_step_end(self, args, state, control, model=None, **kwargs):
        current = {key: value.detach().clone() for key, value in model.state_dict().items()}
        self.checksums.append({key: (float(v.sum()), float(v.abs().sum())) for key, v in current.items()})
        if state.global_step in self.keep_after:
            self.states[state.global_step] = current


class CountingGate:
    """Wraps the trainer module's `gate_counts` to record the counts of every gate decision."""

    def __init__(self):
        self.counts: list[tuple[int, int]] = []

    def __call__(self, text_embeds, image_embeds, labels):
        counts = gate_counts(text_embeds, image_embeds, labels)
        self.counts.append(counts)
        return counts


def trajectory_model(tensors) -> SppSclModel:
    config = paper_config_with_small_towers(dropout=0.0)
    model = SppSclModel(config).double()
    model.load_state_dict(convert_reference_state_dict(reference_weights(tensors, "start."), config), strict=False)
    return model


def trajectory_arguments(output_dir, recipe, **kwargs) -> SppSclTrainingArguments:
    return SppSclTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=recipe["batch_size"],
        num_train_epochs=recipe["epochs"],
        lr_halving_epochs=recipe["halving_every_epochs"],
        learning_rate=recipe["lr"],
        weight_decay=recipe["weight_decay"],
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        train_sampling_strategy="sequential",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        **kwargs,
    )


class AllParametersDecayed(SppSclTrainer):
    """The reference decays every parameter, biases and BatchNorm weights included; the Trainer exempts those."""

    def get_decay_parameter_names(self, model):
        return [name for name, _ in model.named_parameters()]


@pytest.fixture(scope="module")
def run(trajectory, tmp_path_factory, monkeypatch_module):
    tensors, recipe = trajectory
    model = trajectory_model(tensors)
    recorder, gate = RecordUpdates(), CountingGate()
    monkeypatch_module.setattr("modeling_sppscl.training.trainer.gate_counts", gate)
    trainer = AllParametersDecayed(
        model=model, args=trajectory_arguments(tmp_path_factory.mktemp("trajectory"), recipe),
        train_dataset=TrajectoryRows(tensors), data_collator=stack_rows, callbacks=[recorder],
    )
    trainer.train()
    return trainer, recorder, gate


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def reference_to_ours(tensors, config) -> dict[str, str]:
    """The reference's state keys -> ours (the conversion keeps the tensors, so their identity maps the names)."""
    start = reference_weights(tensors, "start.")
    converted = convert_reference_state_dict(start, config)
    ours_by_tensor = {id(value): key for key, value in converted.items()}
    return {key: ours_by_tensor[id(value)] for key, value in start.items()}


def test_every_update_matches_the_reference(run, trajectory):
    trainer, recorder, gate = run
    _, recipe = trajectory
    updates = recipe["updates"]
    logs = [entry for entry in trainer.state.log_history if "ce_loss" in entry]
    assert len(logs) == len(updates) == trainer.state.global_step == 10
    assert len(gate.counts) == 10
    for log, counts, expected in zip(logs, gate.counts, updates):
        where = f"update {expected['update']}"
        assert log["learning_rate"] == pytest.approx(expected["lr"], rel=1e-12), where
        assert 5 * log["ce_loss"] == pytest.approx(expected["loss1.ce_x5"], abs=LOSS_TOL), where
        assert log["intra_text_loss"] == pytest.approx(expected["loss1.intra_text"], abs=LOSS_TOL), where
        assert log["intra_image_loss"] == pytest.approx(expected["loss1.intra_image"], abs=LOSS_TOL), where
        assert counts == (expected["gate.below"], expected["gate.same_label_pairs"]), where
        assert log["gate_step2_rate"] == (0.0 if expected["gate.skip_inter"] else 1.0), where
        if expected["gate.skip_inter"]:
            assert "inter_loss" not in log, where
        else:
            assert log["inter_loss"] == pytest.approx(expected["loss2.inter"], abs=LOSS_TOL), where
    assert [u["update"] for u in updates if not u["gate.skip_inter"]] == [1, 8, 10]


def test_parameter_checksums_after_every_update(run, trajectory):
    trainer, recorder, _ = run
    tensors, recipe = trajectory
    names = reference_to_ours(tensors, trainer.model.config)
    for ours, expected in zip(recorder.checksums, recipe["updates"]):
        # The reference sums every float entry (num_batches_tracked is compared in the full states).
        assert set(expected["checksums"]) == {key for key in names if not key.endswith("num_batches_tracked")}
        for reference_key, sums in expected["checksums"].items():
            assert ours[names[reference_key]] == pytest.approx(tuple(sums), rel=CHECKSUM_RTOL, abs=STATE_TOL), (
                f"update {expected['update']}: {reference_key}"
            )


@pytest.mark.parametrize("after", [5, 10])
def test_full_state_after_updates(run, trajectory, after):
    trainer, recorder, _ = run
    tensors, _ = trajectory
    expected = convert_reference_state_dict(reference_weights(tensors, f"after{after}."), trainer.model.config)
    state = recorder.states[after]
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, atol=STATE_TOL, rtol=0, msg=lambda m: f"after {after}, {key}: {m}")
