"""Mixed precision in both updates: bfloat16 autocast on the CPU stays close to float32; a float16 GradScaler (as
accelerate sets up on CUDA with --fp16) scales and unscales each of the two-step update's optimizer steps, also
when the gate skips step 2. No GPU here: the scaler is torch's CPU GradScaler put where accelerate puts the CUDA one."""

import copy

import pytest
import torch
import accelerate.accelerator
from accelerate import Accelerator

from modeling_sppscl.data.cache_format import CachedFeatureCollator
from modeling_sppscl.data.feature_cache import extract_features
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import tiny_model, tiny_processor
from test_feature_cache import make_rows, one_thread  # noqa: F401 (autouse: one torch thread)


@pytest.fixture
def cached(tmp_path):
    model = tiny_model("default", dropout=0.0)
    cache = extract_features(model, tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 12), cache_dir=tmp_path / "cache", device="cpu")
    return model, cache


def trainer_for(model, cache, tmp_path, update, gate_ratio=None, **precision):
    model = copy.deepcopy(model)
    if gate_ratio is not None:
        model.config.gate_ratio = gate_ratio
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path / f"out-{update}"), per_device_train_batch_size=4, max_steps=6, learning_rate=1e-2,
        sppscl_update=update, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0, **precision,
    )
    return SppSclTrainer(model=model, args=args, train_dataset=cache, data_collator=CachedFeatureCollator())


def run(trainer):
    trainer.train()
    losses = torch.tensor([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    # One update per log entry: `inter_loss` is logged where the gate let the inter-modal term in.
    rates = [float("inter_loss" in entry) for entry in trainer.state.log_history if "loss" in entry]
    return losses, {name: param.detach().clone() for name, param in trainer.model.named_parameters()}, rates


@pytest.mark.parametrize("update", ["two_step", "one_step"])
def test_bfloat16_on_cpu_trains_close_to_float32(update, cached, tmp_path):
    model, cache = cached
    exact_losses, _, _ = run(trainer_for(model, cache, tmp_path / "fp32", update))
    mixed = trainer_for(model, cache, tmp_path / "bf16", update, bf16=True)
    assert mixed.accelerator.mixed_precision == "bf16"
    mixed_losses, mixed_weights, _ = run(mixed)
    assert not torch.equal(mixed_losses, exact_losses)  # autocast did run
    # The first step starts from the same weights: bfloat16 keeps ~3 digits of its loss. Later steps follow
    # trajectories that part (the gate reads embeddings rounded to bfloat16), so only their health is checked.
    torch.testing.assert_close(mixed_losses[0], exact_losses[0], rtol=2e-2, atol=0)
    assert mixed_losses.isfinite().all() and all(weight.isfinite().all() for weight in mixed_weights.values())
    assert not torch.equal(mixed_weights["classifier.weight"], model.classifier.weight)


def with_grad_scaler(trainer, monkeypatch):
    """accelerate's fp16 set-up, on the CPU: a GradScaler for backward and each optimizer step, unscaling before
    the gradient norm (a power-of-two scale, so the float32 numbers stay exact)."""
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer.accelerator.native_amp = True
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    # Only the scaler is under test: CPU autocast in float16 would change the numbers themselves.
    monkeypatch.setattr(accelerate.accelerator, "get_mixed_precision_context_manager", lambda *args, **kwargs: torch.autocast("cpu", enabled=False))
    return trainer


@pytest.mark.parametrize("update, max_grad_norm", [("two_step", 0.0), ("one_step", 0.0), ("two_step", 0.5)])
def test_grad_scaler_steps_equal_unscaled_steps(update, max_grad_norm, cached, tmp_path, monkeypatch):
    model, cache = cached
    gate_ratio = 1.0  # on these rows the gate then opens on some steps and stays closed on others
    plain_losses, plain_weights, plain_rates = run(trainer_for(model, cache, tmp_path / "plain", update, gate_ratio, max_grad_norm=max_grad_norm))
    scaled = with_grad_scaler(trainer_for(model, cache, tmp_path / "scaled", update, gate_ratio, max_grad_norm=max_grad_norm), monkeypatch)
    scaled_losses, scaled_weights, scaled_rates = run(scaled)
    assert scaled_rates == plain_rates
    assert 0.0 in plain_rates and 1.0 in plain_rates  # steps with and without step 2 (two-step update)
    torch.testing.assert_close(scaled_losses, plain_losses, rtol=0, atol=1e-6)
    for name, weight in plain_weights.items():
        torch.testing.assert_close(scaled_weights[name], weight, rtol=0, atol=1e-6, msg=name)
    assert scaled.accelerator.scaler.get_scale() == 2.0**12  # no overflow: every step was taken
