"""SppSclModel: batch independence, save/load, tower families, dtypes, freezing and input errors."""

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoProcessor, MPNetConfig, RobertaConfig

from configuration_sppscl import SppSclConfig
from modeling_sppscl import SppSclModel, SppSclProcessor

from conftest import TINY_WORDS, tiny_bert_config, tiny_config, tiny_convnext_config, tiny_model, tiny_processor


def random_image(seed: int, size=(40, 48)) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def random_text(seed: int, length: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(TINY_WORDS, size=length))


TEXTS = [random_text(i, n) for i, n in enumerate([3, 12, 1, 20, 7, 2, 15, 5])]
IMAGES = [random_image(i) for i in range(8)]


def logits_of(model, processor, indices):
    inputs = processor(images=[IMAGES[i] for i in indices], text=[TEXTS[i] for i in indices])
    with torch.no_grad():
        return model(**inputs).logits


def test_default_variant_prediction_does_not_depend_on_the_batch(tmp_path):
    model = tiny_model("default").eval()
    processor = tiny_processor(tmp_path, "default")
    alone = logits_of(model, processor, [0])
    in_batch = logits_of(model, processor, [3, 1, 0, 6, 2, 4, 5, 7])[2:3]
    torch.testing.assert_close(alone, in_batch, atol=1e-6, rtol=0)


def test_paper_variant_prediction_depends_on_the_batch(tmp_path):
    model = tiny_model("paper").eval()
    processor = tiny_processor(tmp_path, "paper")
    alone = logits_of(model, processor, [0])
    in_batch = logits_of(model, processor, [3, 1, 0, 6, 2, 4, 5, 7])[2:3]
    assert (alone - in_batch).abs().max() > 1e-5  # ten times the default variant's tolerance


def test_paper_variant_pads_to_202(tmp_path):
    inputs = tiny_processor(tmp_path, "paper")(images=IMAGES[:2], text=TEXTS[:2])
    assert inputs["input_ids"].shape == (2, 202)


def test_forward_from_tower_outputs_equals_full_forward(tmp_path):
    model = tiny_model("default").eval()
    inputs = tiny_processor(tmp_path)(images=IMAGES[:4], text=TEXTS[:4])
    with torch.no_grad():
        full = model(**inputs)
        hidden = model.text_tower_hidden_states(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        features = model.vision_tower_features(inputs["pixel_values"])
        split = model(text_hidden_states=tuple(hidden), attention_mask=inputs["attention_mask"], image_features=features)
    torch.testing.assert_close(full.logits, split.logits, atol=0, rtol=0)
    torch.testing.assert_close(model.get_text_features(**{k: inputs[k] for k in ("input_ids", "attention_mask")}), full.text_embeds)
    torch.testing.assert_close(model.get_image_features(pixel_values=inputs["pixel_values"]), full.image_embeds)


@pytest.mark.parametrize("variant", ["default", "paper"])
def test_save_and_load_give_identical_logits(tmp_path, variant):
    model = tiny_model(variant).eval()
    processor = tiny_processor(tmp_path / "tok", variant)
    with torch.no_grad():  # move BatchNorm statistics and weights away from their initial values
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert load_file(str(tmp_path / "model" / "model.safetensors"))
    loaded = AutoModel.from_pretrained(tmp_path / "model").eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path / "model")
    assert isinstance(loaded, SppSclModel) and isinstance(loaded_processor, SppSclProcessor)
    without_path = lambda config: {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(AutoConfig.from_pretrained(tmp_path / "model")) == without_path(model.config)
    inputs = processor(images=IMAGES[:3], text=TEXTS[:3])
    reloaded_inputs = loaded_processor(images=IMAGES[:3], text=TEXTS[:3])
    for key in inputs:
        torch.testing.assert_close(inputs[key], reloaded_inputs[key], atol=0, rtol=0)
    loaded_state = loaded.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded_state[key], value, atol=0, rtol=0)
    with torch.no_grad():  # identical weights; 1e-6 leaves room for the CPU kernels' run-to-run rounding
        torch.testing.assert_close(model(**inputs).logits, loaded(**reloaded_inputs).logits, atol=1e-6, rtol=0)


def test_frozen_towers_get_no_gradient_and_no_optimizer_state(tmp_path):
    from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

    model = tiny_model("default")
    inputs = tiny_processor(tmp_path)(images=IMAGES[:4], text=TEXTS[:4])
    model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    towers = [p for m in (model.text_model, model.vision_model) for p in m.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in towers)
    head = [p for m in model.head_modules() for p in m.parameters()]
    assert all(p.grad is not None for p in head)
    trainer = SppSclTrainer(model=model, args=SppSclTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    trainer.create_optimizer()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in head}


def test_frozen_towers_stay_in_eval_mode_unless_the_paper_variant():
    default, paper = tiny_model("default").train(), tiny_model("paper").train()
    assert not default.vision_model.training and not default.text_model.training and default.fusion.training
    assert paper.vision_model.training and paper.text_model.training


def tiny_roberta_config():
    return RobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                         max_position_embeddings=64, pad_token_id=1)


def tiny_mpnet_config():
    return MPNetConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                       max_position_embeddings=64, pad_token_id=1)


@pytest.mark.parametrize("text_config_of", [tiny_bert_config, tiny_roberta_config, tiny_mpnet_config], ids=["bert", "roberta", "mpnet"])
@pytest.mark.parametrize("vision_config_of", [None, tiny_convnext_config], ids=["resnet", "convnext"])
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_tower_families_forward_backward_save_load(tmp_path, text_config_of, vision_config_of, variant):
    kwargs = {"text_config": text_config_of()}
    if vision_config_of is not None:
        kwargs["vision_config"] = vision_config_of()
    torch.manual_seed(0)
    model = SppSclModel(tiny_config(variant, freeze_text_model=False, **kwargs))
    input_ids = torch.randint(3, 20, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 5:] = 0
    pixel_values = torch.randn(3, 3, 32, 32)
    out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert model.text_model.embeddings.word_embeddings.weight.grad is not None
    model.save_pretrained(tmp_path)
    loaded = SppSclModel.from_pretrained(tmp_path).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits,
            loaded(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits,
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_dtypes(tmp_path, dtype, variant):
    model = tiny_model(variant).to(dtype)
    inputs = tiny_processor(tmp_path, variant)(images=IMAGES[:4], text=TEXTS[:4])
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    out = model(**inputs, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert out.logits.dtype == dtype and torch.isfinite(out.loss)


def test_training_batch_of_one_sample_uses_running_statistics(tmp_path):
    """BatchNorm has no batch statistics for one sample: every BatchNorm of the head (the image reduction's
    BatchNorm2d included) normalises with its running statistics, leaves them as they were, and trains again after."""
    model = tiny_model("default", dropout=0.0)
    with torch.no_grad():  # running statistics away from their initial 0 and 1, so that using them shows
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    inputs = tiny_processor(tmp_path)(images=IMAGES[:1], text=TEXTS[:1])
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.train()
    with pytest.warns(UserWarning, match="one sample"):
        out = model(**inputs, labels=torch.tensor([1]))
    out.loss.backward()
    torch.testing.assert_close(out.logits.detach(), expected, atol=1e-6, rtol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0, msg=key)
    assert torch.isfinite(out.loss) and all(module.training for head in model.head_modules() for module in head.modules())


class TestBadInputs:
    @pytest.fixture
    def model(self):
        return tiny_model("default").eval()

    @pytest.fixture
    def inputs(self, tmp_path):
        return tiny_processor(tmp_path)(images=IMAGES[:2], text=TEXTS[:2])

    def test_mismatched_batch_sizes(self, model, inputs):
        with pytest.raises(ValueError, match="text batch has 2 samples but the image batch has 1"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][:1]})

    def test_missing_image(self, model, inputs):
        with pytest.raises(ValueError, match="pixel_values or image_features"):
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    def test_missing_text(self, model, inputs):
        with pytest.raises(ValueError, match="input_ids .* or text_hidden_states"):
            model(pixel_values=inputs["pixel_values"])

    def test_wrong_image_feature_shape(self, model, inputs):
        with pytest.raises(ValueError, match=r"image_features must have shape \[batch, 24, height, width\]"):
            model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}, image_features=torch.randn(2, 5, 3, 3))

    def test_wrong_text_hidden_state_shape(self, model, inputs):
        with pytest.raises(ValueError, match="text_hidden_states must be 4 tensors"):
            model(text_hidden_states=torch.randn(3, 2, 7, 32), attention_mask=torch.ones(2, 7), pixel_values=inputs["pixel_values"])

    def test_label_out_of_range(self, model, inputs):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
            model(**inputs, labels=torch.tensor([0, 3]))

    def test_missing_attention_mask_with_masked_pooling(self, model, inputs):
        with pytest.raises(ValueError, match="attention_mask is required"):
            model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])

    def test_processor_takes_either_modality_and_refuses_empty_text(self, tmp_path):
        processor = tiny_processor(tmp_path)
        with pytest.raises(ValueError, match="needs texts, images or both"):
            processor()
        assert set(processor(text=["good"])) == {"input_ids", "token_type_ids", "attention_mask"}
        assert set(processor(images=IMAGES[:1])) == {"pixel_values"}
        with pytest.raises(ValueError, match="text 1 is empty"):
            processor(images=IMAGES[:2], text=["good", "  "])
        with pytest.raises(ValueError, match="2 texts but 1 images"):
            processor(images=IMAGES[:1], text=["good", "bad"])
        with pytest.raises(ValueError, match="no image file at /nonexistent.jpg"):
            processor(images=["/nonexistent.jpg"], text=["good"])

    def test_processor_accepts_paths_arrays_and_pil(self, tmp_path):
        processor = tiny_processor(tmp_path)
        IMAGES[0].save(tmp_path / "a.png")
        out = processor(images=[str(tmp_path / "a.png"), np.asarray(IMAGES[0]), IMAGES[0]], text=["good", "bad", "sad"])
        torch.testing.assert_close(out["pixel_values"][0], out["pixel_values"][1], atol=0, rtol=0)
        torch.testing.assert_close(out["pixel_values"][0], out["pixel_values"][2], atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "fast"}, "variant must be one of"),
        ({"fusion_attention": "global"}, "fusion_attention must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"gate_ratio": 1.5}, r"gate_ratio must be in \(0, 1\]"),
        ({"shared_dim": 0}, "shared_dim must be an integer >= 1"),
        ({"ce_loss_weight": -1.0}, "ce_loss_weight must be >= 0"),
        ({"num_text_layers": 9}, r"num_text_layers must be in \[1, 5\]"),
        ({"num_labels": 1}, "at least 2 labels"),
    ],
)
def test_invalid_config_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_variant_switches_can_be_overridden():
    config = SppSclConfig(variant="paper", fusion_attention="sample")
    assert config.fusion_attention == "sample" and config.text_pooling == "padded_mean"


def test_towers_passed_in_keep_respecting_the_padding_mask(tmp_path):
    """A tower handed to the constructor keeps its attention kernel (a rebuilt sub-config would lose it and BERT
    would then attend to padding)."""
    from transformers import BertModel

    torch.manual_seed(0)
    text_tower = BertModel(tiny_bert_config())
    model = SppSclModel(tiny_config("default"), text_model=text_tower).eval()
    processor = tiny_processor(tmp_path)
    alone = logits_of(model, processor, [0])
    padded = logits_of(model, processor, [0, 3])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-6, rtol=0)
