"""Feature cache integrity and placement: the fingerprint follows the rows' content (image bytes included); a
killed extraction leaves nothing that is read as a cache; extraction runs on the device training will use, with
parallel image decoding and optional mixed precision."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset

from modeling_sppscl.data.feature_cache import MANIFEST_FILE, STAGING_PREFIX, extract_features
from modeling_sppscl.training.trainer import SppSclTrainingArguments

from conftest import tiny_model, tiny_processor
from test_feature_cache import make_rows, one_thread  # noqa: F401 (autouse: one torch thread)


REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_names(cache) -> list[str]:
    """The cache folders (one per tower) the rows of `cache` are read from."""
    return [Path(file["filename"]).parent.name for file in cache.cache_files]


def cache_name(model, processor, rows, cache_dir, **kwargs) -> list[str]:
    return cache_names(extract_features(model, processor, rows, cache_dir=cache_dir, **kwargs))


# ----- fingerprint of the content -----------------------------------------------------------------------------
def test_an_image_file_replaced_in_place_gets_a_new_cache(tmp_path):
    rows = make_rows(tmp_path, count=4)  # row 2's image is the file tmp_path/photo.png
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    before = extract_features(model, processor, rows, cache_dir=tmp_path / "cache")
    PIL.Image.fromarray(np.full((30, 44, 3), 255, dtype=np.uint8)).save(tmp_path / "photo.png")
    after = extract_features(model, processor, rows, cache_dir=tmp_path / "cache")
    (text_before, vision_before), (text_after, vision_after) = cache_names(before), cache_names(after)
    assert text_after == text_before and vision_after != vision_before  # the texts' cache is the image's no concern
    assert not np.array_equal(after["image_features"][2], before["image_features"][2])
    np.testing.assert_array_equal(after["image_features"][0], before["image_features"][0])


def test_the_same_content_from_another_dataset_object_reuses_the_cache(tmp_path, caplog):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    rows = make_rows(tmp_path, count=4)
    first = cache_name(model, processor, rows, tmp_path / "cache")
    # Same rows, through a transform (a different datasets fingerprint): the content decides.
    rebuilt = rows.select(range(len(rows))).flatten_indices()
    assert rebuilt._fingerprint != rows._fingerprint
    with caplog.at_level(logging.INFO, logger="modeling_sppscl.data.feature_cache"):
        assert cache_name(model, processor, rebuilt, tmp_path / "cache") == first
    assert "reusing cache" in caplog.text


def test_a_changed_text_gets_a_new_text_cache(tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    rows = make_rows(tmp_path, count=4)
    text, vision = cache_name(model, processor, rows, tmp_path / "cache")
    edited = rows.map(lambda row, index: {"text": "sad sad movie"} if index == 0 else {}, with_indices=True)
    new_text, same_vision = cache_name(model, processor, edited, tmp_path / "cache")
    assert new_text != text and same_vision == vision


@pytest.mark.parametrize("column, value", [("label", 2), ("id", "other")])
def test_a_changed_label_or_id_reuses_the_towers_caches_and_is_read_from_the_rows(column, value, tmp_path):
    model, processor = tiny_model("default"), tiny_processor(tmp_path / "tok")
    rows = make_rows(tmp_path, count=4)
    base = extract_features(model, processor, rows, cache_dir=tmp_path / "cache")
    edited = rows.map(lambda row, index: {column: value} if index == 0 else {}, with_indices=True)
    cache = extract_features(model, processor, edited, cache_dir=tmp_path / "cache")
    assert cache_names(cache) == cache_names(base)
    assert cache[column][0] == value and list(cache[column][1:]) == list(base[column][1:])


# ----- atomic writes --------------------------------------------------------------------------------------------
KILLED_EXTRACTION = """
import sys, time
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
from conftest import tiny_model, tiny_processor
from test_feature_cache import make_rows
from modeling_sppscl.data.feature_cache import extract_features

tmp = Path({tmp!r})
model = tiny_model("default")
forward = model.vision_model.forward
calls = []
def slow_forward(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # the shape probe, batch 1 written, then hang in batch 2 until killed
        (tmp / "ready").touch()
        time.sleep(600)
    return forward(*args, **kwargs)
model.vision_model.forward = slow_forward
extract_features(model, tiny_processor(tmp / "tok"), make_rows(tmp), cache_dir=tmp / "cache", batch_size=4, device="cpu")
"""


@pytest.mark.slow
def test_a_killed_extraction_leaves_no_cache_and_its_staging_is_removed(tmp_path, caplog):
    script = KILLED_EXTRACTION.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"), tmp=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "ready").exists():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the extraction subprocess did not reach its second batch"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    cache_dir = tmp_path / "cache"
    leftovers = list(cache_dir.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(STAGING_PREFIX), leftovers
    assert not (leftovers[0] / MANIFEST_FILE).exists()

    with caplog.at_level(logging.INFO, logger="modeling_sppscl.data.feature_cache"):
        cache = extract_features(tiny_model("default"), tiny_processor(tmp_path / "tok"), make_rows(tmp_path), cache_dir=cache_dir, batch_size=4)
    assert "reusing cache" not in caplog.text and "interrupted extraction" in caplog.text
    assert sorted(path.name for path in cache_dir.iterdir()) == sorted(cache_names(cache))
    assert len(cache) == 9


def test_a_live_extractions_staging_folder_is_left_alone(tmp_path):
    import socket

    live = tmp_path / "cache" / f"{STAGING_PREFIX}abc-{socket.gethostname()}-{os.getpid()}-0000"
    live.mkdir(parents=True)
    extract_features(tiny_model("default"), tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 3), cache_dir=tmp_path / "cache")
    assert live.is_dir()


def test_a_failed_extraction_removes_its_staging_folder(tmp_path):
    # An unreadable image is recorded (`image_problem`), not fatal; a text the tokenizer must refuse is.
    rows = Dataset.from_dict({"id": ["a"], "text": [" "], "image": ["/nonexistent/x.jpg"], "label": [0]})
    with pytest.raises(ValueError, match="row 'a'"):
        extract_features(tiny_model("default"), tiny_processor(tmp_path / "tok"), rows, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ----- device, workers, precision -------------------------------------------------------------------------------
def test_extraction_runs_on_the_training_arguments_device_not_the_models(tmp_path, monkeypatch):
    """The model sits on the CPU; the training arguments name another device. No accelerator here, so the meta
    device stands in for it: the towers must receive their inputs there (the meta tensors cannot be copied back,
    which ends the extraction with an error after the towers ran)."""
    from run_sppscl import DataArguments, prepare_splits

    args = SppSclTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    assert args.device.type == "cpu"  # sets up the process state, then the device is redirected
    monkeypatch.setattr(SppSclTrainingArguments, "device", property(lambda self: torch.device("meta")))
    model = tiny_model("default")
    assert model.device.type == "cpu"
    seen = []
    for tower in (model.text_model, model.vision_model):
        tower.register_forward_pre_hook(lambda module, inputs, kwargs: seen.append(
            {value.device.type for value in (*inputs, *kwargs.values()) if isinstance(value, torch.Tensor)}
            | {next(module.parameters()).device.type}), with_kwargs=True)
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        # A cache folder of its own: a cache another test made of the same rows would be reused, and no tower run.
        prepare_splits({"train": make_rows(tmp_path, 4)}, DataArguments(feature_cache_dir=str(tmp_path / "cache")), model,
                       tiny_processor(tmp_path / "tok"), args)
    assert seen and all(devices == {"meta"} for devices in seen), seen


def test_extraction_defaults_to_the_accelerate_device(tmp_path, monkeypatch):
    from accelerate import PartialState

    monkeypatch.setattr(PartialState(), "device", torch.device("meta"))
    model = tiny_model("default")
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        extract_features(model, tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 3), cache_dir=tmp_path / "cache")
    assert model.device.type == "meta"


def test_decoding_workers_give_the_same_cache(tmp_path):
    model, processor, rows = tiny_model("default"), tiny_processor(tmp_path / "tok"), make_rows(tmp_path)
    serial = extract_features(model, processor, rows, cache_dir=tmp_path / "serial", batch_size=3, num_workers=0)
    parallel = extract_features(model, processor, rows, cache_dir=tmp_path / "parallel", batch_size=3, num_workers=2)
    assert list(parallel["id"]) == list(serial["id"])
    for column in ("text_hidden_states", "image_features"):
        for left, right in zip(serial[column], parallel[column]):
            np.testing.assert_array_equal(left, right)


def test_bfloat16_extraction_is_close_to_float32_and_cached_apart(tmp_path):
    model, processor, rows = tiny_model("default"), tiny_processor(tmp_path / "tok"), make_rows(tmp_path, 4)
    exact = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", device="cpu", precision="auto")
    mixed = extract_features(model, processor, rows, cache_dir=tmp_path / "cache", device="cpu", precision="bfloat16")
    assert mixed.cache_files[0]["filename"] != exact.cache_files[0]["filename"]
    for column in ("text_hidden_states", "image_features"):
        for left, right in zip(exact[column], mixed[column]):
            assert not np.array_equal(left, right)  # autocast did run in bfloat16 ...
            np.testing.assert_allclose(right, left, rtol=0, atol=0.1 * np.abs(left).max())  # ... to ~3 digits
