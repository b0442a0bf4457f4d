"""The review defects of issue 10, each pinned by a test that fails on the old code."""

import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures  # noqa: E402

from conftest import collate_feature_rows, tiny_model  # noqa: E402


class GradientsAtOptimizerStep(TrainerCallback):
    """Copies every trainable parameter's gradient as the Trainer's optimizer is about to step."""

    def __init__(self):
        self.captured: list[dict[str, torch.Tensor | None]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.captured.append({n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})


def test_unfrozen_tower_follows_the_callers_no_grad():
    model = tiny_model(freeze_text_model=False, freeze_vision_model=False).eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
              "pixel_values": torch.randn(1, 3, 32, 32)}
    with torch.no_grad():
        hidden = model.text_tower_hidden_states(inputs["input_ids"], inputs["attention_mask"])
        features = model.vision_tower_features(inputs["pixel_values"])
        outputs = model(**inputs)
    for tensor in (hidden, features, outputs.logits, outputs.text_embeds):
        assert not tensor.requires_grad and tensor.grad_fn is None
    # Outside no_grad the same unfrozen tower does build a graph (the check above is not vacuous).
    assert model.text_tower_hidden_states(inputs["input_ids"], inputs["attention_mask"]).requires_grad


def test_one_step_accumulation_averages_the_micro_batch_gradients(tmp_path):
    """Two accumulated batches of 8 step with the mean of their two gradients, computed here by brute force."""
    data = RandomFeatures(16)
    model = tiny_model("default", seed=1, dropout=0.0)
    expected = brute_force_mean_gradient(tiny_model("default", seed=1, dropout=0.0), [collate_feature_rows([data[i] for i in range(s, s + 8)]) for s in (0, 8)])
    capture = GradientsAtOptimizerStep()
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=1,
        sppscl_update="one_step", report_to=[], save_strategy="no", use_cpu=True, seed=0,
    )
    # A sequential sampler keeps the micro-batches those of the brute force.
    trainer = SppSclTrainer(model=model, args=args, train_dataset=data, data_collator=collate_feature_rows, callbacks=[capture])
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(data)
    trainer.train()
    (captured,) = capture.captured
    assert set(captured) == set(expected)
    for name, gradient in expected.items():
        torch.testing.assert_close(captured[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


def brute_force_mean_gradient(model, batches):
    """Mean over `batches` of the gradient of the one-step objective (step-1 loss plus the gated inter-modal term)."""
    from modeling_sppscl.loss_sppscl import gate_counts, gate_takes_inter_step, inter_modal_contrastive_loss

    model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        outputs = model(**batch)
        loss = outputs.loss
        if gate_takes_inter_step(*gate_counts(outputs.text_embeds, outputs.image_embeds, batch["labels"]), model.config.gate_ratio):
            config = model.config
            inter = inter_modal_contrastive_loss(outputs.text_embeds, outputs.image_embeds, batch["labels"], config.temperature, config.contrastive_loss)
            loss = loss + config.inter_loss_weight * inter
        gradients = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for name, gradient in zip(params, gradients):
            if gradient is not None:
                total[name] += gradient / len(batches)
    return total
