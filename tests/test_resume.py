"""A run stopped after k steps and resumed ends with the weights of a run straight through."""

import sys
from pathlib import Path

import pytest
import torch

from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures, collate  # noqa: E402

from conftest import tiny_model  # noqa: E402


def make_trainer(output_dir, max_steps, update):
    args = SppSclTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=max_steps,
        learning_rate=1e-2,
        lr_halving_epochs=1,
        save_strategy="steps",
        save_steps=3,
        report_to=[],
        use_cpu=True,
        seed=0,
        sppscl_update=update,
    )
    return SppSclTrainer(model=tiny_model("default", seed=1), args=args, train_dataset=RandomFeatures(), data_collator=collate)


@pytest.mark.parametrize("update", ["two_step", "one_step"])
def test_resume_matches_straight_run(tmp_path, update):
    straight = make_trainer(tmp_path / "straight", 8, update)
    straight.train()
    interrupted = make_trainer(tmp_path / "interrupted", 3, update)
    interrupted.train()
    resumed = make_trainer(tmp_path / "interrupted", 8, update)
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-3"))
    assert resumed.state.global_step == straight.state.global_step == 8
    resumed_state = resumed.model.state_dict()
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    moved = tiny_model("default", seed=1).state_dict()
    assert any((moved[k] != v).any() for k, v in resumed_state.items() if k.startswith("fusion"))


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
