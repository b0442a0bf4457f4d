"""The paper variant against the golden fixture made with the authors' released code (float64)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, ResNetConfig

from configuration_sppscl import SppSclConfig
from modeling_sppscl import (
    SppSclModel,
    convert_reference_state_dict,
    gate_counts,
    gate_takes_inter_step,
    inter_modal_contrastive_loss,
    intra_modal_contrastive_loss,
)


EVAL_TOL = 1e-9


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    tensors = load_file(str(fixture_dir / "reference_head.safetensors"))
    scalars = json.loads((fixture_dir / "reference_head.json").read_text())
    return tensors, scalars


def reference_weights(tensors, prefix="weights."):
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def paper_config_with_small_towers(**kwargs) -> SppSclConfig:
    """bert-base / ResNet-50 widths where the head reads them (768 and 2048), few layers elsewhere."""
    text = BertConfig(vocab_size=64, hidden_size=768, num_hidden_layers=3, num_attention_heads=4, intermediate_size=32)
    vision = ResNetConfig(embedding_size=8, hidden_sizes=[2048], depths=[1], layer_type="bottleneck")
    return SppSclConfig(text_config=text, vision_config=vision, variant="paper", **kwargs)


def reference_model(tensors, **config_kwargs) -> SppSclModel:
    config = paper_config_with_small_towers(**config_kwargs)
    model = SppSclModel(config).double()
    model.load_state_dict(convert_reference_state_dict(reference_weights(tensors), config), strict=False)
    return model


@pytest.fixture(scope="module")
def model(fixture):
    return reference_model(fixture[0]).eval()


def test_conversion_uses_every_head_key_and_fills_the_head(fixture):
    tensors, _ = fixture
    config = paper_config_with_small_towers()
    converted = convert_reference_state_dict(reference_weights(tensors), config)
    head_keys = {k for k in SppSclModel(config).state_dict() if not k.startswith(("text_model.", "vision_model."))}
    assert set(converted) == head_keys


def test_eval_outputs_match(model, fixture):
    tensors, _ = fixture
    with torch.no_grad():
        out = model(text_hidden_states=tensors["inputs.text_hidden_last4"], image_features=tensors["inputs.image_feature_map"])
    for ours, theirs in [("logits", "logits"), ("fused_embeds", "fused"), ("text_embeds", "text_embeds"), ("image_embeds", "image_embeds")]:
        torch.testing.assert_close(getattr(out, ours), tensors[f"eval.{theirs}"], atol=EVAL_TOL, rtol=0)


def test_tuple_of_layers_equals_stacked_tensor(model, fixture):
    tensors, _ = fixture
    hidden = tensors["inputs.text_hidden_last4"]
    with torch.no_grad():
        stacked = model(text_hidden_states=hidden, image_features=tensors["inputs.image_feature_map"]).logits
        as_tuple = model(text_hidden_states=tuple(hidden), image_features=tensors["inputs.image_feature_map"]).logits
    torch.testing.assert_close(stacked, as_tuple, atol=0, rtol=0)


def test_paper_variant_depends_on_the_batch_as_the_reference_does(model, fixture):
    tensors, _ = fixture
    hidden, image = tensors["inputs.text_hidden_last4"], tensors["inputs.image_feature_map"]
    with torch.no_grad():
        halves = torch.cat([model(text_hidden_states=hidden[:, s], image_features=image[s]).logits for s in (slice(0, 4), slice(4, 8))])
    torch.testing.assert_close(halves, tensors["eval.logits_in_two_halves"], atol=EVAL_TOL, rtol=0)
    assert (halves - tensors["eval.logits"]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "labels_key, suffix", [("inputs.labels", ""), ("inputs.labels_with_singleton", "_singleton")]
)
def test_losses_match(fixture, labels_key, suffix):
    tensors, scalars = fixture
    text, image, labels = tensors["eval.text_embeds"], tensors["eval.image_embeds"], tensors[labels_key]
    expected = {
        f"loss.intra_text{suffix}": intra_modal_contrastive_loss(text, labels, 0.07, "reference"),
        f"loss.intra_image{suffix}": intra_modal_contrastive_loss(image, labels, 0.07, "reference"),
        f"loss.inter_text_anchor{suffix}": inter_modal_contrastive_loss(text, image, labels, 0.07, "reference"),
    }
    if not suffix:
        expected["loss.inter"] = inter_modal_contrastive_loss(image, text, labels, 0.07, "reference")
    for key, value in expected.items():
        assert value.item() == pytest.approx(scalars[key], abs=EVAL_TOL), key


def test_cross_entropy_matches(model, fixture):
    tensors, scalars = fixture
    with torch.no_grad():
        out = model(
            text_hidden_states=tensors["inputs.text_hidden_last4"],
            image_features=tensors["inputs.image_feature_map"],
            labels=tensors["inputs.labels"],
        )
    assert out.ce_loss.item() == pytest.approx(scalars["loss.ce"], abs=EVAL_TOL)
    assert out.intra_text_loss.item() == pytest.approx(scalars["loss.intra_text"], abs=EVAL_TOL)
    expected_total = 5 * scalars["loss.ce"] + scalars["loss.intra_text"] + scalars["loss.intra_image"]
    assert out.loss.item() == pytest.approx(expected_total, abs=1e-8)


def test_gate_on_eval_embeddings(fixture):
    tensors, scalars = fixture
    below, same = gate_counts(tensors["eval.text_embeds"], tensors["eval.image_embeds"], tensors["inputs.labels"])
    assert (below, same) == (scalars["gate.eval.below"], scalars["gate.eval.same_label_pairs"])
    assert gate_takes_inter_step(below, same) is not scalars["gate.eval.skip_inter"]


def test_gate_cases_at_the_threshold(fixture):
    _, scalars = fixture
    for case in scalars["gate.cases"]:
        below, same = gate_counts(
            torch.tensor(case["text_embeds"]), torch.tensor(case["image_embeds"]), torch.tensor(case["labels"])
        )
        assert (below, same) == (case["below"], case["same_label_pairs"])
        assert gate_takes_inter_step(below, same, scalars["gate_ratio"]) is not case["skip_inter"]
