"""The frozen-tower feature cache: training from it equals training through the towers; its fingerprint tracks
every input; the collators pad, name bad rows and support grouping by length."""

import copy
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler

from modeling_sppscl.data.collators import ImageTextCollator, add_length_column
from modeling_sppscl.data.feature_cache import CachedFeatureCollator
from modeling_sppscl.data.feature_cache import FEATURES_FILE, extract_features
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import TINY_WORDS, tiny_model, tiny_processor


EXACT_TOL = 1e-5
# float16 storage, measured on these tiny towers over 5 seeds (worst case): eval logits move by 3e-6; in train mode
# the loss moves by 3e-4 (relative) and the head's gradients (relative norm over all of them) by 2.5e-3 in the
# default variant but 3.4e-2 in the paper one, whose text mean is dominated by padding features that barely vary
# across the batch, so the BatchNorm after it magnifies the rounding. The bounds leave a margin of ~3x.
FLOAT16_LOGITS_TOL = 2e-5
FLOAT16_LOSS_REL_TOL = 1e-3
FLOAT16_GRAD_REL_TOL = {"default": 1e-2, "paper": 1e-1}


def random_image(rng: np.random.Generator, height: int, width: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_rows(tmp_path, count: int = 9) -> Dataset:
    """Texts of 1 to 14 words, images as PIL images, one as a file, two missing (None); labels with repeats."""
    rng = np.random.default_rng(0)
    image_file = tmp_path / "photo.png"
    random_image(rng, 30, 44).save(image_file)
    images = [None if i % 4 == 1 else random_image(rng, 36 + i, 40) for i in range(count)]
    images[2] = str(image_file)
    return Dataset.from_dict({
        "id": [f"s{i}" for i in range(count)],
        "text": [" ".join(rng.choice(TINY_WORDS, 1 + (5 * i) % 14)) for i in range(count)],
        "image": images,
        "label": [i % 3 for i in range(count)],
    })


def deterministic_model(variant: str):
    """Train mode with eval-mode towers and no dropout: both paths are then deterministic."""
    model = tiny_model(variant, dropout=0.0, frozen_towers_follow_train_mode=False)
    return model.train()


def loss_and_gradients(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = copy.deepcopy(model)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: param.grad for name, param in model.named_parameters() if param.requires_grad}


def both_batches(model, processor, rows: Dataset, cache_dir, storage_dtype: str = "float32"):
    """The full model's batch and the cache's, of all rows. Extraction runs the towers on that same batch, so any
    difference comes from the cache path; another extraction batch size moves the features by float rounding only
    (see test_extraction_batch_size_changes_features_by_rounding_only), which the losses magnify past 1e-5."""
    cache = extract_features(model, processor, rows, cache_dir=cache_dir, batch_size=len(rows), storage_dtype=storage_dtype)
    full = ImageTextCollator(processor)([rows[i] for i in range(len(rows))])
    cached = CachedFeatureCollator()([cache[i] for i in range(len(cache))])
    return full, cached


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine the threads' waits for each other make
    the paper variant's 200-step BiLSTM some 30 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rows(tmp_path) -> Dataset:
    return make_rows(tmp_path)


# ----- training from the cache equals training through the towers ----------------------------------------------
@pytest.mark.parametrize("variant", ["paper", "default"])
def test_cached_loss_and_gradients_equal_full_model(variant, rows, tmp_path):
    model = deterministic_model(variant)
    processor = tiny_processor(tmp_path / "tok", variant)
    full, cached = both_batches(model, processor, rows, tmp_path / "cache")
    assert model.training and not model.text_model.training and not model.vision_model.training

    full_loss, full_grads = loss_and_gradients(model, full)
    cached_loss, cached_grads = loss_and_gradients(model, cached)

    torch.testing.assert_close(cached_loss, full_loss, rtol=0, atol=EXACT_TOL)
    head_names = {name for name, param in model.named_parameters() if param.requires_grad}
    assert head_names and all(not name.startswith(("text_model.", "vision_model.")) for name in head_names)
    for name in head_names:
        assert full_grads[name] is not None and cached_grads[name] is not None, name
        torch.testing.assert_close(cached_grads[name], full_grads[name], rtol=0, atol=EXACT_TOL, msg=name)


@pytest.mark.parametrize("variant", ["paper", "default"])
def test_float16_storage_stays_within_measured_tolerance(variant, rows, tmp_path):
    model = deterministic_model(variant)
    processor = tiny_processor(tmp_path / "tok", variant)
    full, cached = both_batches(model, processor, rows, tmp_path / "cache", storage_dtype="float16")
    assert cached["text_hidden_states"].dtype == torch.float32

    full_loss, full_grads = loss_and_gradients(model, full)
    cached_loss, cached_grads = loss_and_gradients(model, cached)
    with torch.no_grad():
        full_logits, cached_logits = model.eval()(**full).logits, model(**cached).logits

    assert abs(cached_loss - full_loss) / full_loss < FLOAT16_LOSS_REL_TOL
    full_flat = torch.cat([grad.flatten() for grad in full_grads.values()])
    cached_flat = torch.cat([cached_grads[name].flatten() for name in full_grads])
    assert (cached_flat - full_flat).norm() / full_flat.norm() < FLOAT16_GRAD_REL_TOL[variant]
    torch.testing.assert_close(cached_logits, full_logits, rtol=0, atol=FLOAT16_LOGITS_TOL)


def test_extraction_batch_size_changes_features_by_rounding_only(rows, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    one = extract_features(model, processor, rows, cache_dir=tmp_path / "one", batch_size=len(rows))
    pairs = extract_features(model, processor, rows, cache_dir=tmp_path / "pairs", batch_size=2)
    for column in ("text_hidden_states", "image_features"):
        for left, right in zip(one[column], pairs[column]):
            np.testing.assert_allclose(left, right, rtol=0, atol=1e-5)


def test_float16_storage_halves_the_cache(rows, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    sizes = {}
    for dtype in ("float32", "float16"):
        extract_features(model, processor, rows, cache_dir=tmp_path / dtype, storage_dtype=dtype)
        sizes[dtype] = next((tmp_path / dtype).glob(f"*/{FEATURES_FILE}")).stat().st_size
    assert sizes["float16"] < 0.6 * sizes["float32"]


# ----- padding ------------------------------------------------------------------------------------------------
def test_default_variant_logits_do_not_depend_on_dynamic_padding(rows, tmp_path):
    model = tiny_model("default").eval()
    cache = extract_features(model, tiny_processor(tmp_path / "tok"), rows, cache_dir=tmp_path / "cache")
    shortest = int(np.argmin(cache["length"]))
    others = [i for i in range(len(cache)) if i != shortest]
    assert max(cache["length"][i] for i in others) > cache["length"][shortest]

    with torch.no_grad():
        alone = model(**CachedFeatureCollator()([cache[shortest]])).logits[0]
        in_batch = model(**CachedFeatureCollator()([cache[i] for i in [shortest, *others]])).logits[0]
        fixed = model(**CachedFeatureCollator(pad_to=60)([cache[shortest]])).logits[0]
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(fixed, alone, rtol=0, atol=1e-6)


def test_paper_cache_keeps_the_fixed_padded_length(rows, tmp_path):
    model = tiny_model("paper", frozen_towers_follow_train_mode=False)
    cache = extract_features(model, tiny_processor(tmp_path / "tok", "paper"), rows, cache_dir=tmp_path / "cache")
    batch = CachedFeatureCollator()([cache[i] for i in range(3)])
    assert batch["text_hidden_states"].shape[2] == 202
    assert batch["attention_mask"].sum(dim=1).tolist() == list(cache["length"][:3])


def test_cached_collator_refuses_texts_longer_than_pad_to(rows, tmp_path):
    cache = extract_features(tiny_model("default"), tiny_processor(tmp_path / "tok"), rows, cache_dir=tmp_path / "cache")
    longest = int(np.argmax(cache["length"]))
    with pytest.raises(ValueError, match="s.*more than pad_to=4"):
        CachedFeatureCollator(pad_to=4)([cache[longest]])


# ----- fingerprint --------------------------------------------------------------------------------------------
def cache_folder(model, processor, rows, cache_dir, **kwargs) -> dict[str, str]:
    """Tower -> the name of its cache folder."""
    cache = extract_features(model, processor, rows, cache_dir=cache_dir, **kwargs)
    folders = [Path(file["filename"]).parent.name for file in cache.cache_files]
    return {folder.split("-")[0]: folder for folder in folders}


def test_same_setup_reuses_the_cache(rows, tmp_path, caplog):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    first = cache_folder(model, processor, rows, tmp_path / "cache")
    again = make_rows(tmp_path)  # rebuilt from the same data: same dataset fingerprint
    with caplog.at_level(logging.INFO, logger="modeling_sppscl.data.feature_cache"):
        second = cache_folder(tiny_model("default"), tiny_processor(tmp_path / "tok2"), again, tmp_path / "cache")
    assert second == first
    assert "reusing cache" in caplog.text


def edit_text_config(model, processor):
    model.config.text_config.layer_norm_eps = 1e-5


def edit_text_weight(model, processor):
    with torch.no_grad():
        model.text_model.embeddings.word_embeddings.weight[7, 0] += 1e-3


def edit_vision_buffer(model, processor):
    model.vision_model.embedder.embedder.normalization.running_mean[0] += 1e-3


def edit_num_text_layers(model, processor):
    model.config.num_text_layers = 3


def edit_image_processor(model, processor):
    processor.image_processor.crop_pct = 0.9


def edit_text_max_length(model, processor):
    processor.text_max_length = 9


def edit_tokenizer_lowercasing(model, processor):
    processor.tokenizer.backend_tokenizer.normalizer.lowercase = False


@pytest.mark.parametrize(
    "edit, tower",
    [
        (edit_text_config, "text"),
        (edit_text_weight, "text"),
        (edit_vision_buffer, "vision"),
        (edit_num_text_layers, "text"),
        (edit_image_processor, "vision"),
        (edit_text_max_length, "text"),
        (edit_tokenizer_lowercasing, "text"),
    ],
)
def test_a_changed_input_gets_a_new_cache_of_its_tower_only(edit, tower, rows, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    before = cache_folder(model, processor, rows, tmp_path / "cache")
    assert set(before) == {"text", "vision"}
    edit(model, processor)
    after = cache_folder(model, processor, rows, tmp_path / "cache")
    assert {name for name in before if after[name] != before[name]} == {tower}


def test_storage_dtype_and_dataset_get_their_own_cache(rows, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    base = cache_folder(model, processor, rows, tmp_path / "cache")
    assert cache_folder(model, processor, rows, tmp_path / "cache", storage_dtype="float16") != base
    assert cache_folder(model, processor, rows.select(range(5)), tmp_path / "cache") != base


# ----- refusals and warnings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("unfrozen", ["freeze_text_model", "freeze_vision_model"])
def test_a_trainable_tower_is_refused(unfrozen, rows, tmp_path):
    model = tiny_model("default", **{unfrozen: False})
    with pytest.raises(ValueError, match="tower is trainable"):
        extract_features(model, tiny_processor(tmp_path / "tok"), rows, cache_dir=tmp_path / "cache")


def test_train_mode_towers_warn_that_the_cache_uses_eval_mode(rows, tmp_path):
    model = tiny_model("paper").train()
    with pytest.warns(UserWarning, match="eval-mode tower outputs"):
        extract_features(model, tiny_processor(tmp_path / "tok", "paper"), rows, cache_dir=tmp_path / "cache")
    assert model.training and model.text_model.training


def test_features_beyond_float16_range_are_refused(rows, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    last_norm = [m for m in model.vision_model.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_norm.bias.fill_(1e5)  # above float16's largest value, 65504
    with pytest.raises(ValueError, match="float16's range"):
        extract_features(model, processor, rows, cache_dir=tmp_path / "cache", storage_dtype="float16")
    extract_features(model, processor, rows, cache_dir=tmp_path / "cache", storage_dtype="float32")


def test_padded_mean_needs_fixed_padding(rows, tmp_path):
    model = tiny_model("paper", frozen_towers_follow_train_mode=False)
    with pytest.raises(ValueError, match="pad_to_max_length=True"):
        extract_features(model, tiny_processor(tmp_path / "tok", "default"), rows, cache_dir=tmp_path / "cache")


# ----- raw collator -------------------------------------------------------------------------------------------
def test_image_text_collator_builds_model_inputs(rows, processor):
    batch = ImageTextCollator(processor)([rows[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values", "labels"}
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    # Row 1 has no image: the blank stands in, black before normalisation.
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1, 1)
    torch.testing.assert_close(batch["pixel_values"][1], (-mean / std).expand(3, 32, 32))


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "bad-file", "text": "good day", "image": "/nonexistent/x.jpg", "label": 0}, "bad-file"),
        ({"id": "no-text", "text": " ", "image": None, "label": 0}, "no-text"),
        ({"id": "no-label", "text": "good day", "image": None}, "no-label"),
    ],
)
def test_image_text_collator_names_the_bad_row(row, message, processor):
    good = {"id": "ok", "text": "sad movie", "image": None, "label": 1}
    with pytest.raises(ValueError, match=message):
        ImageTextCollator(processor)([good, row])


# ----- grouping by length -------------------------------------------------------------------------------------
def test_length_columns_count_the_tokens(rows, processor, tmp_path):
    expected = [len(processor.tokenize(text)["input_ids"][0]) for text in rows["text"]]
    assert add_length_column(rows, processor)["length"] == expected
    cache = extract_features(tiny_model("default"), processor, rows, cache_dir=tmp_path / "cache")
    assert list(cache["length"]) == expected


def test_trainer_groups_the_cache_by_length_and_trains_from_it(rows, processor, tmp_path):
    model = tiny_model("default")
    cache = extract_features(model, processor, rows, cache_dir=tmp_path / "cache")
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        train_sampling_strategy="group_by_length",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=cache, data_collator=CachedFeatureCollator())
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and list(sampler.lengths) == list(cache["length"])
    before = model.classifier.weight.detach().clone()
    trainer.train()
    assert not torch.equal(model.classifier.weight, before)
