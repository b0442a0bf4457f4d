"""What SppSclTrainer logs: exactly the loss terms the configuration uses, a start line saying what `loss` is, and
`grad_norm` every logging step or never."""

import logging

import pytest
import torch
from torch.utils.data import Dataset

from conftest import collate_feature_rows, tiny_model
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments


TRAINER_KEYS = {"loss", "learning_rate", "epoch", "step"}
ALL_TERMS = {"ce_loss", "intra_text_loss", "intra_image_loss", "inter_loss", "gate_step2_rate"}
CE_ONLY = {"intra_text_loss_weight": 0.0, "intra_image_loss_weight": 0.0, "inter_loss_weight": 0.0}


class OneClassFeatures(Dataset):
    """Tower outputs of one class: the gate allows step 2 on such batches."""

    def __init__(self, n=16):
        generator = torch.Generator().manual_seed(0)
        self.hidden = torch.randn(4, n, 6, 32, generator=generator)
        self.image = torch.randn(n, 24, 2, 2, generator=generator)

    def __len__(self):
        return self.image.shape[0]

    def __getitem__(self, i):
        return {"text_hidden_states": self.hidden[:, i], "image_features": self.image[i], "labels": torch.tensor(0)}


def train(tmp_path, caplog, model_kwargs=(), **kwargs):
    model = tiny_model("default", seed=0, **dict(model_kwargs))
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, **kwargs,
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=OneClassFeatures(), data_collator=collate_feature_rows)
    with caplog.at_level(logging.INFO, logger="modeling_sppscl.training.trainer"):
        trainer.train()
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SPP-SCL objective:")]
    training_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return trainer, starts, training_logs


def test_ce_only_run_logs_ce_alone_and_takes_one_optimizer_step_per_update(tmp_path, caplog):
    trainer, starts, logs = train(tmp_path, caplog, CE_ONLY, logging_steps=1)
    assert starts == ["SPP-SCL objective: loss = 5 * ce_loss (inter_loss_weight is 0: no gate, no step 2)"]
    assert len(logs) == trainer.state.global_step == 8
    for entry in logs:
        assert set(entry) == TRAINER_KEYS | {"ce_loss"}
        assert entry["loss"] == pytest.approx(5 * entry["ce_loss"], rel=1e-5)
    # No step 2: AdamW stepped once per update.
    assert {int(state["step"]) for state in trainer.optimizer.state.values()} == {8}


def test_two_step_run_logs_every_term_and_loss_is_their_weighted_sum(tmp_path, caplog):
    trainer, starts, logs = train(tmp_path, caplog, logging_steps=1)
    assert starts == [
        "SPP-SCL objective: loss = 5 * ce_loss + 1 * intra_text_loss + 1 * intra_image_loss (step 1) + 1 * inter_loss "
        "(step 2, taken when the gate allows; gate_step2_rate is the share of updates that took it)"
    ]
    assert len(logs) == 8
    took_step_two = [entry["gate_step2_rate"] == 1.0 for entry in logs]
    assert any(took_step_two)
    for entry, took in zip(logs, took_step_two):
        assert set(entry) == TRAINER_KEYS | ALL_TERMS - (set() if took else {"inter_loss"})
        step_one = 5 * entry["ce_loss"] + entry["intra_text_loss"] + entry["intra_image_loss"]
        assert entry["loss"] == pytest.approx(step_one + (entry["inter_loss"] if took else 0.0), rel=1e-5)
    steps = sorted(int(state["step"]) for state in trainer.optimizer.state.values())
    assert steps[0] == steps[-1] == 8 + sum(took_step_two)


def test_one_step_run_has_no_gate_rate(tmp_path, caplog):
    _, starts, logs = train(tmp_path, caplog, {"intra_image_loss_weight": 0.0}, sppscl_update="one_step", logging_steps=8)
    assert starts == [
        "SPP-SCL objective: loss = 5 * ce_loss + 1 * intra_text_loss + 1 * inter_loss (one-step update; the term is "
        "added when the gate allows)"
    ]
    (entry,) = logs
    assert set(entry) == TRAINER_KEYS | {"ce_loss", "intra_text_loss", "inter_loss"}


@pytest.mark.parametrize("update", ["two_step", "one_step"])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5])
def test_grad_norm_every_logging_step_or_never(tmp_path, caplog, max_grad_norm, update):
    _, starts, logs = train(tmp_path, caplog, CE_ONLY, logging_steps=1, max_grad_norm=max_grad_norm, sppscl_update=update)
    assert [("grad_norm" in entry) for entry in logs] == [max_grad_norm > 0] * 8
    assert starts[0].endswith("before clipping to 0.5") is (max_grad_norm > 0)


def test_total_flos_counts_the_head_over_cached_features(tmp_path, caplog):
    trainer, _, _ = train(tmp_path, caplog, CE_ONLY, logging_steps=1)
    head_parameters = sum(p.numel() for module in trainer.model.head_modules() for p in module.parameters())
    # 2 epochs x 16 pairs x 6 text positions, every position real in these batches.
    assert trainer.state.total_flos == 6 * head_parameters * (2 * 16 * 6)
