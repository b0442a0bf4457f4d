"""Device-resident feature cache: batches selected on the device equal the host cache's, `SppSclTrainer` trained
from it logs the same losses and ends with the same weights, and any other consumer of its `DataLoader` (a
hand-written loop, the plots) gets ordinary batches (device = cpu here; the code path is the one a GPU takes, with
`device` the accelerator)."""

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from modeling_sppscl.data.cache_format import CachedFeatureCollator
from modeling_sppscl.data.device_cache import DeviceCacheCollator, DeviceFeatureCache, device_bytes
from modeling_sppscl.data.feature_cache import extract_features
from modeling_sppscl.reporting import plots
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

from conftest import tiny_model, tiny_processor
from test_feature_cache import make_rows, one_thread  # noqa: F401 (autouse: one torch thread)


TOL = 1e-6


def host_cache(variant, tmp_path, count=12, storage_dtype="float32"):
    model = tiny_model(variant, frozen_towers_follow_train_mode=False)
    processor = tiny_processor(tmp_path / "tok", variant)
    cache = extract_features(model, processor, make_rows(tmp_path, count), cache_dir=tmp_path / "cache", batch_size=4,
                             storage_dtype=storage_dtype, device="cpu")
    return model, cache


@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_device_batches_equal_the_host_collators(variant, storage_dtype, tmp_path):
    _, cache = host_cache(variant, tmp_path, storage_dtype=storage_dtype)
    on_device = DeviceFeatureCache(cache, "cpu", chunk_size=5)
    assert on_device.text_hidden_states.dtype == getattr(torch, storage_dtype)
    for indices in ([3, 0, 7], [1], [11, 2, 5, 8, 9]):
        host = CachedFeatureCollator()([cache[i] for i in indices])
        device = on_device.batch(torch.tensor(indices))
        assert device.keys() == host.keys() - {"labels"}
        for name, value in device.items():
            assert value.dtype == host[name].dtype and torch.equal(value, host[name]), name


def train(model, dataset, collator, output_dir, update):
    args = SppSclTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2, sppscl_update=update,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0, dataloader_pin_memory=False,
    )
    trainer = SppSclTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, losses, {name: param.detach() for name, param in model.named_parameters()}


@pytest.mark.parametrize("update", ["two_step", "one_step"])
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_training_from_the_device_cache_equals_the_host_cache(variant, update, tmp_path):
    model, cache = host_cache(variant, tmp_path)
    on_device = DeviceFeatureCache(cache, "cpu")

    # One batch: same loss and gradients.
    indices = [4, 1, 9, 6]
    host_batch = CachedFeatureCollator()([cache[i] for i in indices])
    device_batch = DeviceCacheCollator([on_device])([on_device.index_dataset()[i] for i in indices])
    grads = []
    for batch in (host_batch, device_batch):
        replica = copy.deepcopy(model).train()
        torch.manual_seed(0)  # the same dropout masks
        loss = replica(**batch).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in replica.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=TOL)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=0, atol=TOL, msg=name)

    # A few Trainer steps (shuffled, dropout on): same logged losses and weights.
    _, host_losses, host_weights = train(copy.deepcopy(model), cache, CachedFeatureCollator(), tmp_path / "host", update)
    trainer, device_losses, device_weights = train(
        copy.deepcopy(model), on_device.index_dataset(), DeviceCacheCollator([on_device]), tmp_path / "device", update
    )
    assert len(host_losses) == 4
    torch.testing.assert_close(torch.tensor(device_losses), torch.tensor(host_losses), rtol=0, atol=TOL)
    moved = [name for name in host_weights if not torch.equal(host_weights[name], dict(model.named_parameters())[name])]
    assert any(name.startswith("classifier") for name in moved)
    for name, weight in host_weights.items():
        torch.testing.assert_close(device_weights[name], weight, rtol=0, atol=TOL, msg=name)

    # Evaluation from the device cache: same predictions.
    device_prediction = trainer.predict(on_device.index_dataset())
    trainer.data_collator = CachedFeatureCollator()
    host_prediction = trainer.predict(cache)
    torch.testing.assert_close(torch.as_tensor(device_prediction.predictions[0]), torch.as_tensor(host_prediction.predictions[0]), rtol=0, atol=TOL)
    assert device_prediction.metrics["test_loss"] == pytest.approx(host_prediction.metrics["test_loss"], abs=TOL)


def test_a_loop_over_the_dataloader_gets_ordinary_batches(tmp_path):
    model, cache = host_cache("default", tmp_path, count=7)
    on_device = DeviceFeatureCache(cache, "cpu")
    loader = DataLoader(on_device.index_dataset(), batch_size=3, collate_fn=DeviceCacheCollator([on_device]))
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(**batch).logits for batch in loader])
        expected = torch.cat([model(**CachedFeatureCollator()([cache[i] for i in range(first, min(first + 3, 7))])).logits
                              for first in range(0, 7, 3)])
    torch.testing.assert_close(logits, expected, rtol=0, atol=TOL)

    # The plots read the evaluation DataLoader of a Trainer trained from the device cache.
    trainer, _, _ = train(model, on_device.index_dataset(), DeviceCacheCollator([on_device]), tmp_path / "plots", "two_step")
    written = plots.write_plots(tmp_path, trainer, {"validation": on_device.index_dataset()})
    assert [path.name for path in written] == ["tsne_validation.png", "confusion_validation.png", "training_curves.png"]
    embeddings = plots.collect_embeddings(trainer, on_device.index_dataset())
    assert embeddings["labels"].tolist() == [int(label) for label in cache["label"]]


def test_dataloader_workers_are_refused_with_the_reason(tmp_path):
    _, cache = host_cache("default", tmp_path, count=6)
    on_device = DeviceFeatureCache(cache, "cpu")
    loader = DataLoader(on_device.index_dataset(), batch_size=3, collate_fn=DeviceCacheCollator([on_device]), num_workers=1)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        next(iter(loader))


def test_device_bytes_counts_the_padded_texts(tmp_path):
    _, cache = host_cache("default", tmp_path, count=6)
    on_device = DeviceFeatureCache(cache, "cpu")
    held = sum(t.numel() * t.element_size() for t in (on_device.text_hidden_states, on_device.image_features))
    assert device_bytes(cache) == held + on_device.attention_mask.numel()


def test_one_tower_cache_cannot_go_to_the_device(tmp_path):
    model = tiny_model("default", freeze_text_model=False)
    cache = extract_features(model, tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 3), cache_dir=tmp_path / "c", towers=("vision",))
    with pytest.raises(ValueError, match="needs both towers cached"):
        DeviceFeatureCache(cache, "cpu")


def test_run_script_option_chooses_the_device_cache(tmp_path):
    from run_sppscl import DataArguments, prepare_splits

    model, processor, rows = tiny_model("default"), tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 4)
    args = SppSclTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    args.dataloader_num_workers = 2
    splits, collator = prepare_splits({"train": rows}, DataArguments(feature_cache_on_device="true"), model, processor, args)
    assert isinstance(collator, DeviceCacheCollator) and "sample_index" in splits["train"].column_names
    assert args.dataloader_num_workers == 0 and not args.dataloader_pin_memory
    assert splits["train"]["id"] == rows["id"] and splits["train"]["label"] == rows["label"]
    splits, collator = prepare_splits({"train": rows}, DataArguments(), model, processor, args)  # auto: not on a CPU
    assert isinstance(collator, CachedFeatureCollator)
    with pytest.raises(ValueError, match="feature_cache_on_device"):
        prepare_splits({"train": rows}, DataArguments(feature_cache_on_device="yes"), model, processor, args)
