"""`output_hidden_states` / `output_attentions` return the towers' outputs; gradient checkpointing reaches the
towers' layers and leaves the gradients unchanged."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import tiny_model


TEXTS = ["a very good day", "the sad dog is not fine", "blue sky"]


@pytest.fixture
def batch(processor):
    images = [PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)) for seed in range(3)]
    return processor(images=images, text=TEXTS)


def eager_tiny_model():
    model = tiny_model()
    model.set_attn_implementation("eager")  # the sdpa kernel returns no attention weights
    return model


def test_outputs_are_the_towers_own(batch):
    model = eager_tiny_model().eval()
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True, output_attentions=True)
        text_alone = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      token_type_ids=batch["token_type_ids"], output_hidden_states=True, output_attentions=True)
        vision_alone = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True)
    num_layers = model.config.text_config.num_hidden_layers
    assert len(output.text_model_output.hidden_states) == num_layers + 1
    assert len(output.text_model_output.attentions) == num_layers
    for found, expected in zip(output.text_model_output.attentions, text_alone.attentions):
        torch.testing.assert_close(found, expected)
    for found, expected in zip(output.text_model_output.hidden_states, text_alone.hidden_states):
        torch.testing.assert_close(found, expected)
    assert len(output.vision_model_output.hidden_states) == len(vision_alone.hidden_states) > 1
    torch.testing.assert_close(output.vision_model_output.last_hidden_state, vision_alone.last_hidden_state)


def test_outputs_only_when_asked_and_logits_unchanged(batch):
    model = eager_tiny_model().eval()
    with torch.no_grad():
        plain = model(**batch)
        rich = model(**batch, output_hidden_states=True)
        model.config.output_hidden_states = True
        from_config = model(**batch)
        as_tuple = model(**batch, return_dict=False)
    assert plain.text_model_output is None and plain.vision_model_output is None
    assert rich.text_model_output.attentions is None
    torch.testing.assert_close(rich.logits, plain.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_config.vision_model_output.last_hidden_state, rich.vision_model_output.last_hidden_state)
    # A tuple output holds the logits first and the towers' outputs, last, as tuples of their tensors.
    torch.testing.assert_close(as_tuple[0], plain.logits, rtol=0, atol=0)
    text_tuple, vision_tuple = as_tuple[-2], as_tuple[-1]
    assert isinstance(text_tuple, tuple) and isinstance(vision_tuple, tuple)
    torch.testing.assert_close(text_tuple[0], rich.text_model_output.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(vision_tuple[0], rich.vision_model_output.last_hidden_state, rtol=0, atol=0)


def test_no_tower_output_when_features_are_given(batch):
    model = eager_tiny_model().eval()
    with torch.no_grad():
        hidden = model.text_tower_hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        output = model(text_hidden_states=hidden, attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"], output_hidden_states=True)
    assert output.text_model_output is None and output.vision_model_output is not None


def tower_gradients(model, batch, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**batch, labels=labels).loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def test_gradient_checkpointing_recomputes_the_text_tower_with_equal_gradients(batch):
    model = tiny_model(freeze_text_model=False, dropout=0.0).train()
    for module in model.text_model.modules():  # no dropout: both runs draw the same (no) masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    labels = torch.tensor([0, 1, 2])
    calls = []
    # A module inside a layer: the recompute calls it again (the layer itself is recomputed through its `forward`).
    model.text_model.encoder.layer[0].attention.register_forward_hook(lambda *args: calls.append(1))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    plain = tower_gradients(model, batch, labels)
    plain_calls = len(calls)
    model.load_state_dict(state)  # BatchNorm running statistics moved: start again from the same ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old name stays an alias of activation_checkpointing_enable
        model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.text_model.encoder.layer)
    checkpointed = tower_gradients(model, batch, labels)
    # The layer ran again in the backward pass: its activations were not kept.
    assert plain_calls == 1 and len(calls) - plain_calls == 2
    assert any(name.startswith("text_model.") for name in plain) and plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
