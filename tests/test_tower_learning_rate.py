"""`--tower_learning_rate`: the trainable towers' parameters and the head's land in param groups with their own
learning rates, and the Trainer's weight-decay exemptions (biases, LayerNorm) still hold in both."""

import pytest

from conftest import tiny_model
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments


def make_trainer(tmp_path, **arguments) -> SppSclTrainer:
    model = tiny_model(freeze_text_model=False)  # text tower trained, vision tower frozen
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to="none", use_cpu=True, **arguments
    )
    return SppSclTrainer(model=model, args=args)


def groups_by_parameter_name(trainer) -> dict[str, dict]:
    optimizer = trainer.create_optimizer()
    owner = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    return {name: owner[id(p)] for name, p in trainer.model.named_parameters() if id(p) in owner}


def test_tower_and_head_learning_rates_and_decay(tmp_path):
    trainer = make_trainer(tmp_path, tower_learning_rate=2e-5)
    groups = groups_by_parameter_name(trainer)
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(groups) == trainable  # every trainable parameter once, no frozen one
    assert not any(name.startswith("vision_model.") for name in groups)
    decayed = set(trainer.get_decay_parameter_names(trainer.model))
    for name, group in groups.items():
        assert group["lr"] == (2e-5 if name.startswith("text_model.") else 1e-3), name
        assert group["weight_decay"] == (0.01 if name in decayed else 0.0), name
    # Both kinds of parameter occur on both sides, so all four (learning rate, decay) groups are exercised.
    kinds = {(name.startswith("text_model."), group["weight_decay"] > 0) for name, group in groups.items()}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}
    assert "text_model.embeddings.LayerNorm.weight" in groups and groups["text_model.embeddings.LayerNorm.weight"]["weight_decay"] == 0.0


def test_without_tower_learning_rate_one_rate_for_all(tmp_path):
    groups = groups_by_parameter_name(make_trainer(tmp_path))
    assert {group["lr"] for group in groups.values()} == {1e-3}
    assert len({id(group) for group in groups.values()}) == 2  # the Trainer's own decay / no-decay groups


def test_scheduler_scales_each_group_from_its_own_rate(tmp_path):
    trainer = make_trainer(tmp_path, tower_learning_rate=2e-5, lr_scheduler_type="halving", lr_halving_epochs=1,
                           num_train_epochs=2)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    for _ in range(2):
        trainer.optimizer.step()  # no gradients: moves nothing, keeps torch's step order
        trainer.lr_scheduler.step()
    assert sorted({group["lr"] for group in trainer.optimizer.param_groups}) == pytest.approx([1e-5, 5e-4])


def test_negative_tower_learning_rate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--tower_learning_rate"):
        SppSclTrainingArguments(output_dir=str(tmp_path), tower_learning_rate=-1.0)
