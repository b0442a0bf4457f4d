"""Every tower family SPP-SCL takes, each built tiny from its config (nothing downloaded): forward and backward,
the feature cache against the uncached model, save / load (as remote code too) and the pipeline; patch tokens laid
on their grid; the halves of dual-encoder checkpoints; text towers whose position 0 is no summary refused."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoProcessor,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    DebertaV2Config,
    DeiTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    GPT2Config,
    LlamaConfig,
    ModernBertConfig,
    MPNetConfig,
    MPNetModel,
    RobertaConfig,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
    SwinConfig,
    T5Config,
    ViTConfig,
    XLMRobertaConfig,
    pipeline,
)
from configuration_sppscl import SppSclConfig
from modeling_sppscl import SppSclModel
from modeling_sppscl.towers_sppscl import load_tower, patch_grid

from conftest import TINY_WORDS, tiny_bert_config, tiny_config, tiny_convnext_config, tiny_processor, tiny_resnet_config, tiny_tokenizer
from test_feature_cache import both_batches, make_rows, one_thread  # noqa: F401 (autouse: one thread per test)
from test_hub import REMOTE_CHECK
from test_run_sppscl import run_script, write_clmlf_folder


REPO_ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
VIT = {**TRANSFORMER, "image_size": 32, "patch_size": 8}
# The tiny tokenizer's ids: [PAD] 0, [CLS] 2, [SEP] 3.
TEXT = {**TRANSFORMER, "num_hidden_layers": 4, "vocab_size": len(TINY_WORDS) + 5, "max_position_embeddings": 64, "pad_token_id": 0}
TEXT_SPECIAL_IDS = {"bos_token_id": 2, "cls_token_id": 2, "eos_token_id": 3, "sep_token_id": 3}

# name: (config class, its tiny arguments); every patch-token tower downsamples by 8, as a 32-pixel image needs.
VISION_FAMILIES = {
    "vit": (ViTConfig, VIT),
    "deit": (DeiTConfig, VIT),
    "clip_vision": (CLIPVisionConfig, VIT),
    "siglip_vision": (SiglipVisionConfig, VIT),
    "dinov2": (Dinov2Config, VIT),
    "dinov2_registers": (Dinov2WithRegistersConfig, {**VIT, "num_register_tokens": 3}),
    # Final stage after one 2x2 merge of 4-pixel patches.
    "swin": (SwinConfig, {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 2}),
}
TEXT_FAMILIES = {
    "bert": (BertConfig, TEXT),
    "roberta": (RobertaConfig, TEXT),
    "xlm_roberta": (XLMRobertaConfig, TEXT),
    "deberta_v2": (DebertaV2Config, TEXT),
    "modernbert": (ModernBertConfig, {**TEXT, **TEXT_SPECIAL_IDS}),
    "mpnet": (MPNetConfig, TEXT),
}
CNN_FAMILIES = {"resnet": tiny_resnet_config, "convnext": tiny_convnext_config}
CASES = [("vision", name) for name in [*CNN_FAMILIES, *VISION_FAMILIES]] + [("text", name) for name in TEXT_FAMILIES]
CASE_IDS = [f"{modality}-{name}" for modality, name in CASES]
TEXTS = ["a very good day", "the cat is not happy at all", "blue sky", "sad movie very sad"]


def family_config(modality: str, name: str, **overrides):
    if name in CNN_FAMILIES:
        return CNN_FAMILIES[name]()
    config_class, arguments = (VISION_FAMILIES if modality == "vision" else TEXT_FAMILIES)[name]
    return config_class(**{**arguments, **overrides})


def family_model(modality: str, name: str, **kwargs) -> SppSclModel:
    """A tiny SPP-SCL model with this family as its `modality` tower (BERT / ResNet as the other)."""
    torch.manual_seed(0)
    return SppSclModel(tiny_config(**{f"{modality}_config": family_config(modality, name)}, **kwargs))


def random_image(seed: int, height: int = 40, width: int = 48) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def moved_away_from_initialisation(model: SppSclModel) -> SppSclModel:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


def softmax_ranking(logits: torch.Tensor, id2label: dict[int, str]) -> list[tuple[str, float]]:
    scores = logits.softmax(dim=-1).tolist()
    return sorted(((id2label[index], score) for index, score in enumerate(scores)), key=lambda entry: -entry[1])


def assert_pipeline_ranking(found: list[dict], logits: torch.Tensor, id2label: dict[int, str]) -> None:
    expected = softmax_ranking(logits, id2label)
    assert [entry["label"] for entry in found] == [label for label, _ in expected]
    np.testing.assert_allclose([entry["score"] for entry in found], [score for _, score in expected], atol=1e-6, rtol=0)


# ----- every family: forward, cache, save / load, pipeline -----------------------------------------------------
@pytest.mark.parametrize("modality, name", CASES, ids=CASE_IDS)
def test_forward_and_backward_reach_the_tower(modality, name, tmp_path):
    model = family_model(modality, name, **{f"freeze_{modality}_model": False}).train()
    inputs = tiny_processor(tmp_path)(images=[random_image(seed) for seed in range(4)], text=TEXTS)
    output = model(**inputs, labels=torch.tensor([0, 1, 2, 0]))
    assert output.logits.shape == (4, 3) and torch.isfinite(output.loss)
    output.loss.backward()
    tower = model.vision_model if modality == "vision" else model.text_model
    assert any(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in tower.parameters())
    assert all(parameter.grad is not None for head in model.head_modules() for parameter in head.parameters())


@pytest.mark.parametrize("modality, name", CASES, ids=CASE_IDS)
def test_feature_cache_equals_the_uncached_model(modality, name, tmp_path):
    model = family_model(modality, name, dropout=0.0).train()
    full, cached = both_batches(model, tiny_processor(tmp_path / "tok"), make_rows(tmp_path), tmp_path / "cache")
    assert cached["image_features"].dim() == 4 and "pixel_values" not in cached
    torch.testing.assert_close(model(**cached).loss, model(**full).loss, rtol=0, atol=1e-5)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**cached).logits, model(**full).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("modality, name", CASES, ids=CASE_IDS)
def test_saved_model_reloads_and_serves_the_pipeline(modality, name, tmp_path):
    model = moved_away_from_initialisation(family_model(modality, name))
    processor = tiny_processor(tmp_path / "tok")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    package_file = REPO_ROOT / "modeling_sppscl" / "towers_sppscl.py"
    assert (tmp_path / "model" / "towers_sppscl.py").read_bytes() == package_file.read_bytes()
    loaded = SppSclModel.from_pretrained(tmp_path / "model").eval()
    inputs = processor(images=[random_image(seed) for seed in range(3)], text=TEXTS[:3])
    with torch.no_grad():
        logits = model(**inputs).logits
        torch.testing.assert_close(loaded(**inputs).logits, logits, rtol=0, atol=1e-6)
    classify = pipeline("image-text-classification", model=loaded, processor=processor, device="cpu")
    assert_pipeline_ranking(classify({"image": random_image(0), "text": TEXTS[0]}), logits[0], model.config.id2label)


@pytest.mark.parametrize("name", list(TEXT_FAMILIES))
def test_text_family_ignores_padding(name, tmp_path):
    """The tower honours the attention mask: a text's prediction is the same alone and padded beside a longer one."""
    model = family_model("text", name).eval()
    processor = tiny_processor(tmp_path)
    images = [random_image(seed) for seed in range(2)]
    with torch.no_grad():
        alone = model(**processor(images=images[:1], text=TEXTS[2:3])).logits
        padded = model(**processor(images=images, text=[TEXTS[2], TEXTS[1]])).logits
    torch.testing.assert_close(padded[:1], alone, rtol=0, atol=1e-5)


# ----- patch tokens on their grid --------------------------------------------------------------------------------
def test_patch_grid_matches_floor_and_padded_grids():
    """The grid read from the token count is the one the towers cut: ViT's convolution floors, Swin pads."""
    for patch in (8, 14, 16):
        for height in range(patch, 30 * patch, 7):
            for width in range(patch, 30 * patch, 11):
                floor = (height // patch, width // patch)
                padded = (math.ceil(math.ceil(height / patch) / 2), math.ceil(math.ceil(width / patch) / 2))
                for rows, columns in (floor, padded):
                    assert patch_grid(rows * columns, height, width) == (rows, columns), (patch, height, width)


# Every patch-token tower takes an image of another size than its config's 32 x 32; an oblong one shows a transpose.
OTHER_IMAGE_SIZE = (32, 48)


@pytest.mark.parametrize("name", list(VISION_FAMILIES))
def test_patch_tokens_land_on_their_grid(name):
    """With no attention across patches (no layers; Swin's windows of one patch), a change in the top-right 8x8
    pixels moves the top-right cell of the map and no other: prefix tokens dropped, rows and columns in place."""
    overrides = {"window_size": 1} if name == "swin" else {"num_hidden_layers": 0}
    torch.manual_seed(0)
    model = SppSclModel(tiny_config(vision_config=family_config("vision", name, **overrides))).eval()
    height, width = OTHER_IMAGE_SIZE
    pixels = torch.randn(1, 3, height, width)
    changed = pixels.clone()
    changed[..., :8, -8:] += 1.0
    with torch.no_grad():
        before, after = model.vision_tower_features(pixels), model.vision_tower_features(changed)
    assert before.shape == (1, model.config.image_feature_channels, height // 8, width // 8)
    moved = (after - before).abs().amax(dim=(0, 1)) > 1e-6
    expected = torch.zeros_like(moved)
    expected[0, -1] = True
    assert torch.equal(moved, expected), moved


@pytest.mark.parametrize("name", list(VISION_FAMILIES))
def test_tower_trains_at_an_image_size_other_than_its_config(name, tmp_path):
    """A 40 x 56 image (the config says 32 x 32) gives a 5 x 7 map, and one optimiser step on it moves the tower."""
    model = family_model("vision", name, freeze_vision_model=False).train()
    inputs = tiny_processor(tmp_path)(images=[random_image(seed) for seed in range(4)], text=TEXTS)
    inputs["pixel_values"] = torch.randn(4, 3, 40, 56)
    assert model.vision_tower_features(inputs["pixel_values"]).shape == (4, model.config.image_feature_channels, 5, 7)
    before = {key: value.clone() for key, value in model.vision_model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(value, before[key]) for key, value in model.vision_model.state_dict().items())


# ----- dual encoders and refused text towers ---------------------------------------------------------------------
DUAL_ENCODERS = {
    "clip": (CLIPConfig, CLIPModel, CLIPVisionModel),
    "siglip": (SiglipConfig, SiglipModel, SiglipVisionModel),
}


def save_dual_encoder(name: str, folder) -> torch.nn.Module:
    config_class, model_class, _ = DUAL_ENCODERS[name]
    torch.manual_seed(0)
    model = model_class(config_class(vision_config=VIT, text_config={**TEXT, "num_hidden_layers": 2}))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("name", list(DUAL_ENCODERS))
def test_dual_encoder_checkpoint_gives_its_vision_half(name, tmp_path):
    dual = save_dual_encoder(name, tmp_path / name)
    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "bert")
    model = SppSclModel.from_text_vision_pretrained(str(tmp_path / "bert"), str(tmp_path / name))
    assert isinstance(model.vision_model, DUAL_ENCODERS[name][2])
    assert model.config.vision_config.model_type == f"{name}_vision_model"
    expected = dual.vision_model.state_dict()
    found = model.vision_model.state_dict()
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(found[key], value, rtol=0, atol=0, msg=key)
    # A dual-encoder config given whole keeps only its vision half too.
    half = SppSclConfig(vision_config=dual.config.to_dict()).vision_config
    settings = lambda config: {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "dtype")}  # noqa: E731
    assert type(half) is type(model.config.vision_config) and settings(half) == settings(model.config.vision_config)


def test_dual_encoder_checkpoint_without_the_half_is_refused(tmp_path):
    save_dual_encoder("clip", tmp_path / "clip")
    weights = tmp_path / "clip" / "model.safetensors"
    save_file({key: value for key, value in load_file(str(weights)).items() if not key.startswith("vision_model.")}, str(weights))
    with pytest.raises(ValueError, match="the clip checkpoint has no weights for its vision half"):
        load_tower(str(tmp_path / "clip"), "vision")


REFUSED_TEXT_TOWERS = {
    "gpt2": (GPT2Config(n_layer=4, n_embd=32, n_head=4), "last-token pooling"),
    "llama": (LlamaConfig(**TRANSFORMER, num_key_value_heads=4), "last-token pooling"),
    "clip_text_half": (CLIPConfig(), "end-of-text-token pooling"),
    "siglip_text": (SiglipTextConfig(), "last-position pooling"),
    "t5": (T5Config(num_layers=4), "mean pooling over the encoder's tokens"),
}


@pytest.mark.parametrize("name", list(REFUSED_TEXT_TOWERS))
def test_text_towers_without_a_summary_at_position_0_are_refused(name):
    config, pooling = REFUSED_TEXT_TOWERS[name]
    with pytest.raises(ValueError, match=f"cannot feed SPP-SCL.*it would need {pooling}"):
        SppSclConfig(text_config=config.to_dict())


def test_dual_encoder_text_half_is_refused_before_its_weights_load(tmp_path, monkeypatch):
    save_dual_encoder("clip", tmp_path / "clip")
    monkeypatch.setattr(CLIPModel, "from_pretrained", None)  # any weight loading would fail differently
    with pytest.raises(ValueError, match=r"\(clip_text_model\) cannot feed SPP-SCL.*end-of-text-token pooling"):
        load_tower(str(tmp_path / "clip"), "text")


# ----- remote code, in a fresh process -------------------------------------------------------------------------
# Loads each folder as remote code (the folder's own files, `towers_sppscl.py` among them) and reports the logits,
# the pipeline's answer and where the classes came from.
REMOTE_FAMILIES = r"""
import json, sys
import PIL.Image
import torch
from transformers import AutoModel, AutoProcessor, pipeline

folders, image_path, text, report_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
report = {}
for folder in folders:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        logits = model(**processor(images=PIL.Image.open(image_path), text=text)).logits[0].tolist()
    towers = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".towers_sppscl"]
    report[folder] = {"logits": logits, "model_module": type(model).__module__, "towers_file": towers.__file__,
                      "pipeline": pipeline(model=folder, trust_remote_code=True)({"image": image_path, "text": text})}
with open(report_path, "w") as handle:
    json.dump(report, handle)
"""


def remote_env(workdir) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"), TRANSFORMERS_VERBOSITY="error")
    return env


@pytest.mark.slow
def test_every_family_loads_as_remote_code_and_serves_the_pipeline(tmp_path):
    image_path = tmp_path / "photo.png"
    random_image(7).save(image_path)
    expected = {}
    for modality, name in CASES:
        folder = tmp_path / f"sppscl_{modality}_{name}"
        model = moved_away_from_initialisation(family_model(modality, name))
        processor = tiny_processor(tmp_path / "tok")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        with torch.no_grad():
            expected[str(folder)] = (model(**processor(images=PIL.Image.open(image_path), text=TEXTS[1])).logits[0], model.config.id2label)
    (tmp_path / "remote.py").write_text(REMOTE_FAMILIES)
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), json.dumps(list(expected)), str(image_path), TEXTS[1], str(report_path)],
        cwd=tmp_path, env=remote_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(report_path.read_text())
    for folder, (logits, id2label) in expected.items():
        found = report[folder]
        assert found["model_module"].startswith("transformers_modules.") and "modules" in found["towers_file"], folder
        np.testing.assert_allclose(found["logits"], logits.tolist(), atol=1e-6, rtol=0, err_msg=folder)
        assert_pipeline_ranking(found["pipeline"], logits, id2label)


@pytest.mark.slow
def test_clip_vision_and_mpnet_text_train_save_reload_as_remote_code_and_serve(tmp_path):
    """run_sppscl.py with a CLIP checkpoint as the vision tower and MPNet as the text tower trains, saves a folder
    that loads as remote code where the package cannot be imported, and serves through the pipeline."""
    towers = tmp_path / "towers"
    clip = save_dual_encoder("clip", towers / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(towers / "clip")
    torch.manual_seed(0)
    MPNetModel(family_config("text", "mpnet")).save_pretrained(towers / "mpnet")
    tiny_tokenizer(tmp_path / "tok").save_pretrained(towers / "mpnet")
    write_clmlf_folder(tmp_path / "data", {"train": 24, "validation": 12, "test": 6})
    output = tmp_path / "out"
    result = run_script(
        ["--data_dir", str(tmp_path / "data"), "--text_model_name_or_path", str(towers / "mpnet"),
         "--vision_model_name_or_path", str(towers / "clip"), "--output_dir", str(output), "--do_train", "--do_eval",
         "--freeze_vision_model", "true", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
         "--learning_rate", "1e-2", "--report_to", "none"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = SppSclModel.from_pretrained(output).eval()
    assert (model.config.text_config.model_type, model.config.vision_config.model_type) == ("mpnet", "clip_vision_model")
    torch.testing.assert_close(model.vision_model.state_dict(), clip.vision_model.state_dict(), rtol=0, atol=0)
    assert (output / "towers_sppscl.py").is_file()

    image_path = tmp_path / "data" / "images" / "train0.jpg"
    processor = AutoProcessor.from_pretrained(output)
    with torch.no_grad():
        logits = model(**processor(images=PIL.Image.open(image_path), text=TEXTS[0])).logits[0]
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "cases.json").write_text(json.dumps({"bad_pipeline_inputs": {}, "bad_handler_requests": {}}))
    (workdir / "check.py").write_text(REMOTE_CHECK)
    arguments = [str(output), str(image_path), TEXTS[0], str(workdir / "cases.json"), str(workdir / "resaved"), str(workdir / "report.json"),
                 str(REPO_ROOT)]
    completed = subprocess.run([sys.executable, str(workdir / "check.py"), *arguments], cwd=workdir, env=remote_env(workdir),
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    remote = json.loads((workdir / "report.json").read_text())
    assert remote["package_import_error"].startswith("No module named 'configuration_sppscl'")
    np.testing.assert_allclose(remote["logits"], logits.tolist(), atol=1e-6, rtol=0)
    assert_pipeline_ranking(remote["pipeline_single"], logits, model.config.id2label)
    assert (workdir / "resaved" / "towers_sppscl.py").is_file()
