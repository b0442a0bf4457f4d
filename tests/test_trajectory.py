"""Ten two-step updates through SppSclTrainer against the authors' training loop (reference_trajectory.*,
float64): every update's losses, gate counts and decision, learning rate and parameter checksums, and the full
state after updates 5 and 10."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.utils.data import Dataset
from transformers import TrainerCallback

from configuration_sppscl import SppSclConfig
from modeling_sppscl import SppSclModel, convert_reference_state_dict, gate_counts
from modeling_sppscl.training.distributed import _normalise_over_global_batch
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import reference_training_arguments
from test_reference_fixture import paper_config_with_small_towers, reference_weights


REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_TOL = 1e-8
LOSS_TOL = 1e-9
# A checksum adds up to 2048 * 128 entries, each within STATE_TOL of the reference's.
CHECKSUM_RTOL = 1e-8


def load_trajectory(fixture_dir):
    tensors = load_file(str(fixture_dir / "reference_trajectory.safetensors"))
    return tensors, json.loads((fixture_dir / "reference_trajectory.json").read_text())


@pytest.fixture(scope="module")
def trajectory(fixture_dir):
    if not (fixture_dir / "reference_trajectory.safetensors").is_file():
        pytest.skip(f"trajectory fixture not found in {fixture_dir}")
    return load_trajectory(fixture_dir)


class TrajectoryRows(Dataset):
    """Batch A's rows then batch B's: with sequential sampling and batches of 8, the updates alternate A, B."""

    def __init__(self, tensors, with_attention_mask=False):
        self.hidden = torch.cat([tensors["batchA.text_hidden_last4"], tensors["batchB.text_hidden_last4"]], dim=1)
        self.image = torch.cat([tensors["batchA.image_feature_map"], tensors["batchB.image_feature_map"]])
        self.labels = torch.cat([tensors["batchA.labels"], tensors["batchB.labels"]])
        self.with_attention_mask = with_attention_mask

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        row = {"text_hidden_states": self.hidden[:, index], "image_features": self.image[index], "labels": self.labels[index]}
        if self.with_attention_mask:
            # Texts of different lengths, for the default variant's masked pooling.
            length = self.hidden.shape[2] - index % 5
            row["attention_mask"] = (torch.arange(self.hidden.shape[2]) < length).long()
        return row


def stack_rows(rows):
    batch = {"text_hidden_states": torch.stack([r["text_hidden_states"] for r in rows], dim=1)}
    for key in rows[0].keys() - batch.keys():
        batch[key] = torch.stack([r[key] for r in rows])
    return batch


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
    """Wraps the loss module's `gate_counts` (what `SppSclLoss.gate` calls) to record the counts of every gate
    decision."""

    def __init__(self):
        self.counts: list[tuple[int, int]] = []

    def __call__(self, text_embeds, image_embeds, labels):
        counts = gate_counts(text_embeds, image_embeds, labels)
        self.counts.append(counts)
        return counts


def trajectory_model(tensors, variant="paper") -> SppSclModel:
    towers = paper_config_with_small_towers()
    config = SppSclConfig(text_config=towers.text_config, vision_config=towers.vision_config, variant=variant, dropout=0.0)
    model = SppSclModel(config).double()
    model.load_state_dict(convert_reference_state_dict(reference_weights(tensors, "start."), config), strict=False)
    return model


def trajectory_arguments(output_dir, recipe, **kwargs) -> SppSclTrainingArguments:
    kwargs.setdefault("per_device_train_batch_size", recipe["batch_size"])
    return reference_training_arguments(
        output_dir,
        num_train_epochs=recipe["epochs"],
        lr_scheduler_type="halving",
        lr_halving_epochs=recipe["halving_every_epochs"],
        learning_rate=recipe["lr"],
        weight_decay=recipe["weight_decay"],
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        **kwargs,
    )


class AllParametersDecayed(SppSclTrainer):
    """The reference decays every parameter, biases and BatchNorm weights included; the Trainer exempts those."""

    def get_decay_parameter_names(self, model):
        return [name for name, _ in model.named_parameters()]


def train_trajectory(tensors, recipe, output_dir, variant="paper", callbacks=(), **kwargs) -> SppSclTrainer:
    """The fixture's 10 updates (batch A, batch B, five epochs) through SppSclTrainer; `kwargs` go to the
    arguments."""
    trainer = AllParametersDecayed(
        model=trajectory_model(tensors, variant), args=trajectory_arguments(output_dir, recipe, **kwargs),
        train_dataset=TrajectoryRows(tensors, with_attention_mask=variant != "paper"), data_collator=stack_rows,
        callbacks=list(callbacks),
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def run(trajectory, tmp_path_factory, monkeypatch_module):
    recorder, gate = RecordUpdates(), CountingGate()
    monkeypatch_module.setattr("modeling_sppscl.loss_sppscl.gate_counts", gate)
    trainer = train_trajectory(*trajectory, tmp_path_factory.mktemp("trajectory"), callbacks=[recorder])
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


LOGGED_TERMS = ("ce_loss", "intra_text_loss", "intra_image_loss", "gate_step2_rate", "inter_loss")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_two_processes_over_the_global_batch_equal_one_process(trajectory, fixture_dir, tmp_path, variant):
    """`contrastive_over_global_batch`: two processes with 4 rows each take the same 10 updates as one process with
    the 8 rows (BatchNorm statistics, the paper's batch attention, contrastive losses and gate over the global
    batch). For the paper variant the one process is the reference trajectory itself."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO_ROOT / "tests" / "scripts" / "distributed_trajectory.py"), str(fixture_dir), str(tmp_path), variant,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    single = train_trajectory(*trajectory, tmp_path / "single", variant, contrastive_over_global_batch=True)
    expected_logs = [entry for entry in single.state.log_history if "ce_loss" in entry]
    assert len(expected_logs) == 10 and any(entry["gate_step2_rate"] for entry in expected_logs)
    # The head's state (the towers are never run: the rows hold their outputs).
    expected_state = {k: v for k, v in single.model.state_dict().items() if not k.startswith(("text_model.", "vision_model."))}
    for rank in (0, 1):
        state = torch.load(tmp_path / f"state_rank{rank}.pt")
        for key, value in expected_state.items():
            torch.testing.assert_close(state[key], value, atol=STATE_TOL, rtol=0, msg=lambda m: f"rank {rank}, {key}: {m}")
        logs = json.loads((tmp_path / f"log_history_rank{rank}.json").read_text())
        logs = [entry for entry in logs if "ce_loss" in entry]
        for update, (log, expected) in enumerate(zip(logs, expected_logs, strict=True), start=1):
            assert {k: log.get(k) for k in LOGGED_TERMS} == pytest.approx({k: expected.get(k) for k in LOGGED_TERMS}, abs=LOSS_TOL), (
                f"rank {rank}, update {update}"
            )
            # The Trainer sums `loss` in float32.
            assert log["loss"] == pytest.approx(expected["loss"], rel=1e-6), f"rank {rank}, update {update}"


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 2, 2)])
def test_global_batch_normalisation_equals_batchnorm_in_a_group_of_one(tmp_path, shape):
    """The formula the distributed runs use, in a process group of one: output, input gradient and running
    statistics as torch's BatchNorm."""
    norm = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(shape[1]).double()
    torch.nn.init.uniform_(norm.weight)
    torch.nn.init.uniform_(norm.bias)
    ours = copy.deepcopy(norm)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    expected = norm(x)
    (expected_grad,) = torch.autograd.grad((expected * expected.detach()).sum(), x)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        output = _normalise_over_global_batch(ours, x)
        (grad,) = torch.autograd.grad((output * output.detach()).sum(), x)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(output, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=0)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(norm, name), atol=1e-12, rtol=0)
