"""One-tower feature cache: with one tower trainable, the frozen tower's outputs come from the cache and the other
tower runs (and trains) on raw inputs; losses, gradients and trained weights equal the model run without a cache.
Each tower's cache stands alone: a new text tower, or a text tower that now trains, reuses the vision tower's."""

import copy
from types import SimpleNamespace

import pytest
import torch

from modeling_sppscl.data.cache_format import CachedFeatureCollator
from modeling_sppscl.data.collators import ImageTextCollator
from modeling_sppscl.data.feature_cache import extract_features, frozen_towers
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import tiny_bert_config, tiny_model, tiny_processor
from test_feature_cache import EXACT_TOL, make_rows, one_thread  # noqa: F401 (autouse: one torch thread)


# The tower that trains in each case, and the one that is cached.
DIRECTIONS = {"text": ("freeze_text_model", "vision"), "vision": ("freeze_vision_model", "text")}


def partly_frozen_model(variant: str, trained: str):
    """Train mode, no dropout anywhere (the trainable tower's included): both paths are then deterministic."""
    unfreeze, _ = DIRECTIONS[trained]
    text_config = tiny_bert_config()
    text_config.hidden_dropout_prob = text_config.attention_probs_dropout_prob = 0.0
    model = tiny_model(variant, dropout=0.0, frozen_towers_follow_train_mode=False, text_config=text_config, **{unfreeze: False})
    return model.train()


def loss_and_gradients(model, batch):
    model = copy.deepcopy(model)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: param.grad for name, param in model.named_parameters() if param.requires_grad}


@pytest.mark.parametrize("variant", ["default", "paper"])
@pytest.mark.parametrize("trained", ["text", "vision"])
def test_one_tower_cache_gives_the_losses_and_gradients_of_the_full_model(variant, trained, tmp_path):
    model = partly_frozen_model(variant, trained)
    processor = tiny_processor(tmp_path / "tok", variant)
    rows = make_rows(tmp_path)
    cached_tower = DIRECTIONS[trained][1]
    assert frozen_towers(model) == (cached_tower,)

    cache = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", batch_size=len(rows), towers=frozen_towers(model))
    other_raw = "text" if trained == "text" else "image"
    assert other_raw in cache.column_names
    assert ("image_features" in cache.column_names) == (cached_tower == "vision")
    assert ("text_hidden_states" in cache.column_names) == (cached_tower == "text")

    raw = ImageTextCollator(processor)
    full = raw([rows[i] for i in range(len(rows))])
    cached = CachedFeatureCollator(raw_inputs=raw)([cache[i] for i in range(len(cache))])
    assert ("pixel_values" in cached) == (trained == "vision") and ("input_ids" in cached) == (trained == "text")

    full_loss, full_grads = loss_and_gradients(model, full)
    cached_loss, cached_grads = loss_and_gradients(model, cached)
    torch.testing.assert_close(cached_loss, full_loss, rtol=0, atol=EXACT_TOL)
    tower_grads = [name for name, grad in full_grads.items() if name.startswith(f"{trained}_model.") and grad is not None]
    assert len(tower_grads) > 5, "the trainable tower gets gradients"
    for name, grad in full_grads.items():
        if grad is None:  # parameters the model does not use (BERT's pooler)
            assert cached_grads[name] is None and name.startswith(f"{trained}_model."), name
            continue
        torch.testing.assert_close(cached_grads[name], grad, rtol=0, atol=EXACT_TOL, msg=name)


def train(model, dataset, collator, output_dir, update: str):
    args = SppSclTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2, sppscl_update=update,
        report_to=[], save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0,
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    return {name: param.detach() for name, param in model.named_parameters()}


@pytest.mark.parametrize("update", ["two_step", "one_step"])
def test_training_from_a_vision_cache_moves_the_weights_as_training_without_it(update, tmp_path):
    """Text tower fine-tuned next to a cached frozen vision tower: after a few Trainer steps every weight (the text
    tower's included) equals the one trained from raw rows."""
    model = partly_frozen_model("default", "text")
    processor = tiny_processor(tmp_path / "tok")
    rows = make_rows(tmp_path, count=12)
    raw = ImageTextCollator(processor)
    cache = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", batch_size=4, towers=("vision",))

    without = train(copy.deepcopy(model), rows, raw, tmp_path / "raw", update)
    with_cache = train(copy.deepcopy(model), cache, CachedFeatureCollator(raw_inputs=raw), tmp_path / "cached", update)
    before = dict(model.named_parameters())
    assert not torch.equal(without["text_model.embeddings.word_embeddings.weight"], before["text_model.embeddings.word_embeddings.weight"])
    for name, weight in without.items():
        torch.testing.assert_close(with_cache[name], weight, rtol=0, atol=EXACT_TOL, msg=name)


def test_collator_without_raw_inputs_names_the_fix(tmp_path):
    model = partly_frozen_model("default", "text")
    rows = make_rows(tmp_path, count=3)
    cache = extract_features(model, tiny_processor(tmp_path / "tok"), rows, cache_dir=tmp_path / "cache", towers=("vision",))
    with pytest.raises(ValueError, match="one-tower cache.*raw_inputs=ImageTextCollator"):
        CachedFeatureCollator()([cache[0]])


def test_caching_a_trainable_tower_is_refused_and_names_the_frozen_one(tmp_path):
    model = partly_frozen_model("default", "text")
    with pytest.raises(ValueError, match=r"text tower is trainable.*towers=\('vision',\)"):
        extract_features(model, tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 3), cache_dir=tmp_path / "c", towers=("text",))


def test_retraining_the_other_tower_reuses_the_one_tower_cache(tmp_path):
    """The vision cache does not depend on the text tower, whose weights change as it trains."""
    model = partly_frozen_model("default", "text")
    processor, rows = tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 3)
    first = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", towers=("vision",))
    with torch.no_grad():
        model.text_model.embeddings.word_embeddings.weight.add_(1.0)
    again = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", towers=("vision",))
    assert again.cache_files[0]["filename"] == first.cache_files[0]["filename"]


def test_run_script_caches_only_the_frozen_tower(tmp_path):
    from run_sppscl import DataArguments, prepare_splits

    model = partly_frozen_model("default", "text")
    processor, rows = tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 4)
    args = SppSclTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    splits, collator = prepare_splits({"train": rows}, DataArguments(), model, processor, args)
    assert "image_features" in splits["train"].column_names and "text_hidden_states" not in splits["train"].column_names
    batch = collator([splits["train"][i] for i in range(2)])
    assert {"input_ids", "attention_mask", "image_features", "labels"} <= set(batch)
    unfrozen = SimpleNamespace(**{**vars(DataArguments()), "cache_features": True})
    with pytest.raises(ValueError, match="needs a frozen tower"):
        prepare_splits({"train": rows}, unfrozen, tiny_model("default", freeze_text_model=False, freeze_vision_model=False), processor, args)


def counted_vision_forwards(model) -> list:
    calls = []
    forward = model.vision_model.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    model.vision_model.forward = counting_forward
    return calls


def test_a_new_text_tower_reuses_the_vision_towers_cache(tmp_path):
    processor, rows = tiny_processor(tmp_path / "tok"), make_rows(tmp_path)
    first = tiny_model("default")
    extract_features(first, processor, rows, cache_dir=tmp_path / "cache", batch_size=4)
    # Another text tower (other weights, one more layer), the same vision tower.
    second = tiny_model("default", seed=1, text_config=tiny_bert_config(num_hidden_layers=5))
    second.vision_model.load_state_dict(first.vision_model.state_dict())
    calls = counted_vision_forwards(second)
    cache = extract_features(second, processor, rows, cache_dir=tmp_path / "cache", batch_size=4)
    assert calls == [], "the vision tower ran again"
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "cache").iterdir()) == ["text", "text", "vision"]

    second.eval()
    with torch.inference_mode():
        cached = second(**CachedFeatureCollator()([cache[i] for i in range(len(cache))]))
        full = second(**ImageTextCollator(processor)([rows[i] for i in range(len(rows))]))
    torch.testing.assert_close(cached.logits, full.logits, rtol=0, atol=EXACT_TOL)
    torch.testing.assert_close(cached.loss, full.loss, rtol=0, atol=EXACT_TOL)


def test_a_text_tower_that_now_trains_reuses_the_vision_towers_cache(tmp_path):
    processor, rows = tiny_processor(tmp_path / "tok"), make_rows(tmp_path)
    both = extract_features(tiny_model("default"), processor, rows, cache_dir=tmp_path / "cache", batch_size=4)
    model = tiny_model("default", freeze_text_model=False)  # same seed: the same vision tower
    calls = counted_vision_forwards(model)
    vision = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", batch_size=4, towers=frozen_towers(model))
    assert calls == []
    assert "text" in vision.column_names and "text_hidden_states" not in vision.column_names
    assert [file["filename"] for file in vision.cache_files] == [file["filename"] for file in both.cache_files if "/vision-" in file["filename"]]
