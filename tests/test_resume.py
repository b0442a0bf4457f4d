"""A run stopped after k steps, or killed while saving a checkpoint, and resumed ends with the weights of a run
straight through."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from modeling_sppscl.training.checkpoints import COMPLETE_MARKER, last_complete_checkpoint
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments
from run_sppscl import resume_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures  # noqa: E402

from conftest import collate_feature_rows, tiny_model  # noqa: E402


def make_trainer(output_dir, max_steps, update, eval_dataset=None, **arguments):
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
        **arguments,
    )
    return SppSclTrainer(model=tiny_model("default", seed=1), args=args, train_dataset=RandomFeatures(), eval_dataset=eval_dataset,
                         data_collator=collate_feature_rows)


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
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert (run_dir / "checkpoint-6" / "model.safetensors").is_file()  # the half-written one, unmarked
    assert [(run_dir / name / COMPLETE_MARKER).is_file() for name in ("checkpoint-3", "checkpoint-6")] == [True, False]

    # `last` is the Trainer's own resume_from_checkpoint=True; the half-written folder is set aside first.
    assert resume_checkpoint("last", run_dir) is True
    resumed = make_trainer(run_dir, 8, "two_step")
    resumed.train(resume_from_checkpoint=True)
    assert_same_weights(resumed, straight)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert all((run_dir / f"checkpoint-{step}" / COMPLETE_MARKER).is_file() for step in (3, 6, 8))
    aside = run_dir / ".incomplete-checkpoint-6"
    assert (aside / "model.safetensors").is_file() and not (aside / "rng_state.pth").exists()


class KilledBeforeTheMarker(TrainerCallback):
    """Dies in `on_save` at `step`, before any other callback: the Trainer has written and rotated, nothing else ran."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedKill(f"killed after the Trainer saved checkpoint-{self.step}")


def test_rotation_keeps_the_last_complete_checkpoint_until_the_new_one_is(tmp_path):
    """save_total_limit=1: killed after the Trainer wrote checkpoint-6, before it was marked complete, the run still
    has checkpoint-3 (a rotation inside the Trainer's save would have deleted it); resumed, only the last is kept."""
    killed = make_trainer(tmp_path, 8, "two_step", save_total_limit=1)
    killed.callback_handler.callbacks.insert(0, KilledBeforeTheMarker(6))
    with pytest.raises(SimulatedKill):
        killed.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    resumed = make_trainer(tmp_path, 8, "two_step", save_total_limit=1)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-8"]
    assert (tmp_path / "checkpoint-8" / COMPLETE_MARKER).is_file() and (tmp_path / ".incomplete-checkpoint-6").is_dir()


def test_save_total_limit_one_keeps_only_the_best_at_the_end(tmp_path):
    """As the Trainer does with `load_best_model_at_end` and a limit of 1 (set with `set_save`, taken over too)."""
    trainer = make_trainer(tmp_path, 8, "two_step", RandomFeatures(16), eval_strategy="steps", eval_steps=3,
                           load_best_model_at_end=True, metric_for_best_model="loss")
    trainer.args.set_save(strategy="steps", steps=3, total_limit=1)
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name != "checkpoint-8"  # the rotation keeps the newest with the best: only the end removes it
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == [best.name]


def test_a_checkpoint_named_by_path_is_resumed_from_even_unmarked(tmp_path):
    """A checkpoint of the plain Trainer has no marker: named by path, it is the user's choice and stays in place."""
    make_trainer(tmp_path, 3, "two_step").train()
    (tmp_path / "checkpoint-3" / COMPLETE_MARKER).unlink()
    resumed = make_trainer(tmp_path, 8, "two_step")
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert resumed.state.global_step == 8 and (tmp_path / "checkpoint-3").is_dir()


def test_last_passes_over_a_cut_short_checkpoint_folder(tmp_path):
    """A `checkpoint-N` folder without the Trainer's last file (as a killed older version leaves) is not taken."""
    make_trainer(tmp_path, 3, "two_step").train()
    cut_short = tmp_path / "checkpoint-6"
    cut_short.mkdir()
    (cut_short / "config.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    assert resume_checkpoint("last", tmp_path) is True
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
