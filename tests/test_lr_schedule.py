"""`--lr_scheduler_type halving` (the paper's schedule): the learning rate after transformers' linear warm-up, halved
every `--lr_halving_epochs` epochs (default 10), compared step by step with the formula; `--lr_halving_epochs` is
refused with any other schedule; the Trainer's own schedules are untouched."""

import math

import pytest
import torch
from transformers import SchedulerType

from conftest import collate_feature_rows, tiny_model
from modeling_sppscl.training.schedules import DEFAULT_HALVING_EPOCHS
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments


def scheduled_rates(tmp_path, steps_per_epoch=4, **arguments) -> list[float]:
    args = SppSclTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-2, num_train_epochs=6, report_to="none",
                                   use_cpu=True, **arguments)
    trainer = SppSclTrainer(model=tiny_model("default"), args=args)
    total = 6 * steps_per_epoch
    trainer.create_optimizer_and_scheduler(num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()  # no gradients: moves nothing, keeps torch's step order
        trainer.lr_scheduler.step()
    return rates


@pytest.mark.parametrize("warmup_steps", [0, 3, 0.25])
def test_halving_after_warmup_follows_the_formula(tmp_path, warmup_steps):
    rates = scheduled_rates(tmp_path, lr_scheduler_type="halving", lr_halving_epochs=2, warmup_steps=warmup_steps)
    warmup = warmup_steps if warmup_steps >= 1 else math.ceil(24 * warmup_steps)  # 0.25 of the 24 steps: 6
    expected = [1e-2 * min(1.0, step / warmup if warmup else 1.0) * 0.5 ** (step // 8) for step in range(24)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)


def test_halving_period_defaults_to_the_papers_and_is_kept_as_a_choice(tmp_path):
    args = SppSclTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="halving", report_to="none")
    assert args.lr_halving_epochs == DEFAULT_HALVING_EPOCHS == 10
    assert args.lr_scheduler_type == "halving" and args.to_dict()["lr_scheduler_type"] == "halving"


def test_halving_epochs_with_another_schedule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--lr_halving_epochs is the period of --lr_scheduler_type halving, not of cosine"):
        SppSclTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine", lr_halving_epochs=10)


def test_the_trainers_own_schedule_is_not_replaced(tmp_path):
    args = dict(lr_scheduler_type="linear", warmup_steps=4)
    assert SppSclTrainingArguments(output_dir=str(tmp_path), **args).lr_scheduler_type == SchedulerType.LINEAR
    rates = scheduled_rates(tmp_path, **args)
    assert rates == pytest.approx([1e-2 * (step / 4 if step < 4 else (24 - step) / 20) for step in range(24)], rel=1e-12, abs=0)


def test_each_train_call_builds_its_own_halving_schedule(tmp_path):
    dataset = [{"text_hidden_states": torch.randn(4, 6, 32), "image_features": torch.randn(24, 2, 2), "labels": torch.tensor(i % 3)}
               for i in range(8)]
    args = SppSclTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-2,
                                   lr_scheduler_type="halving", lr_halving_epochs=1, logging_steps=1, report_to="none",
                                   save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = SppSclTrainer(model=tiny_model("default"), args=args, train_dataset=dataset, data_collator=collate_feature_rows)
    rates = []
    for _ in range(2):
        trainer.train()
        rates.append([entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry])
    assert rates == [[1e-2, 1e-2, 5e-3, 5e-3]] * 2
