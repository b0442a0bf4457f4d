"""A run stopped after k steps, or killed while saving a checkpoint, and resumed ends with the weights of a run
straight through."""

import sys
from pathlib import Path

import pytest
import torch

from modeling_sppscl.training.checkpoints import STAGING_DIR
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments
from run_sppscl import resume_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures  # noqa: E402

from conftest import collate_feature_rows, tiny_model  # noqa: E402


def make_trainer(output_dir, max_steps, update):
    args = SppSclTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=max_steps,
        learning_rate=1e-2,
        lr_scheduler_type="halving",
        lr_halving_epochs=1,
        save_strategy="steps",
        save_steps=3,
        report_to=[],
        use_cpu=True,
        seed=0,
        sppscl_update=update,
    )
    return SppSclTrainer(model=tiny_model("default", seed=1), args=args, train_dataset=RandomFeatures(), data_collator=collate_feature_rows)


def assert_same_weights(resumed, straight):
    assert resumed.state.global_step == straight.state.global_step == 8
    resumed_state = resumed.model.state_dict()
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    moved = tiny_model("default", seed=1).state_dict()
    assert any((moved[k] != v).any() for k, v in resumed_state.items() if k.startswith("fusion"))


@pytest.mark.parametrize("update", ["two_step", "one_step"])
def test_resume_matches_straight_run(tmp_path, update):
    straight = make_trainer(tmp_path / "straight", 8, update)
    straight.train()
    interrupted = make_trainer(tmp_path / "interrupted", 3, update)
    interrupted.train()
    resumed = make_trainer(tmp_path / "interrupted", 8, update)
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-3"))
    assert_same_weights(resumed, straight)


class SimulatedKill(RuntimeError):
    pass


def kill_while_saving(trainer, step):
    """Make `trainer` die at `step`'s checkpoint after the model and optimizer are written, before the RNG state."""
    save_rng_state = trainer._save_rng_state

    def dying(output_dir):
        if trainer.state.global_step == step:
            raise SimulatedKill(f"killed while writing {output_dir}")
        save_rng_state(output_dir)

    trainer._save_rng_state = dying


def test_killed_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path):
    straight = make_trainer(tmp_path / "straight", 8, "two_step")
    straight.train()
    run_dir = tmp_path / "killed"
    killed = make_trainer(run_dir, 8, "two_step")
    kill_while_saving(killed, 6)
    with pytest.raises(SimulatedKill):
        killed.train()
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    assert (run_dir / STAGING_DIR / "checkpoint-6" / "model.safetensors").is_file()  # the half-written one

    checkpoint = resume_checkpoint("last", run_dir)
    assert checkpoint == str(run_dir / "checkpoint-3")
    resumed = make_trainer(run_dir, 8, "two_step")
    resumed.train(resume_from_checkpoint=checkpoint)
    assert_same_weights(resumed, straight)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert not (run_dir / STAGING_DIR).exists()  # the leftover was cleared, the new checkpoint renamed in place


def test_last_passes_over_a_cut_short_checkpoint_folder(tmp_path):
    """A `checkpoint-N` folder without the Trainer's last file (as a killed older version leaves) is not taken."""
    make_trainer(tmp_path, 3, "two_step").train()
    cut_short = tmp_path / "checkpoint-6"
    cut_short.mkdir()
    (cut_short / "config.json").write_text("{}")
    assert resume_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="no complete checkpoint-N folder in"):
        resume_checkpoint("last", tmp_path / "checkpoint-6")


def test_paper_schedule_halves_the_learning_rate_every_epoch_given(tmp_path):
    trainer = make_trainer(tmp_path, 8, "two_step")  # 32 samples / batch 8 = 4 steps per epoch
    trainer.train()
    halvings = [trainer.lr_scheduler.lr_lambdas[0](step) for step in (0, 3, 4, 7, 8)]
    assert halvings == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.25)


def test_gradient_accumulation_is_refused_in_two_step_mode(tmp_path):
    with pytest.raises(ValueError, match="gradient_accumulation_steps > 1 cannot keep the two-step"):
        SppSclTrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=2)
    assert SppSclTrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=2, sppscl_update="one_step")
